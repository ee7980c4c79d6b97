"""MS-LSTM's mirrored pyramid (seed 001, Section 4.1 and Fig. 2; mazhf/MS-RNN ``MS_LSTM``):
``sms_lstm`` with ConvLSTM cells, ``ms_lstm`` with MK-LSTM cells.

With L layers (the paper: 6), the first L/2 form the encoder and the last L/2 the decoder.
Encoder layers but the last are followed by a 2x2 max pool; decoder layers but the last by
a bilinear upsampling and the addition of the encoder output at that scale (the skip
"+"). For L = 6 the layers run at H, H/2, H/4, H/4, H/2, H::

    x -> L0 -pool-> L1 -pool-> L2 -> L3 -up-(+L1)-> L4 -up-(+L0)-> L5 -> head

mazhf upsamples by a factor 2; here the upsampling goes to the skip's size, which is the
same for even sizes and lets odd sizes (pooled with floor) come back to their size.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._cells import cell_factory, embed_head
from .rollout import RecurrentForecaster
from .stacked import cell_options


class PyramidForecaster(RecurrentForecaster):
    """Cells in the mirrored pyramid between a 1x1 embedding and a 1x1 head.

    Args: as :class:`fastcells.models.stacked.StackedForecaster`; ``num_layers`` must be
    even (>= 2). H and W must be at least ``2 ** (num_layers // 2 - 1)``.

    Shapes: ``forward`` (B, T_in, C, H, W) -> (B, pred_len, C, H, W).
    """

    def __init__(self, frame_channels: int, hidden_size: int = 32, num_layers: int = 6,
                 cell: str = "convlstm", kernel_size: int = 3, kernel_sizes=(3, 5),
                 frame_size=None, input_len: int = 10, pred_len: int = 10,
                 backend: str = "auto", memory_efficient: bool = False):
        super().__init__(frame_channels, frame_size, input_len, pred_len, backend)
        if num_layers < 2 or num_layers % 2:
            raise ValueError(f"num_layers must be even and >= 2 (encoder and mirrored decoder), "
                             f"got {num_layers}")
        make = cell_factory(cell, backend, memory_efficient,
                            **cell_options(cell, kernel_size, kernel_sizes))
        self.embed, self.head = embed_head(frame_channels, hidden_size)
        self.cells = nn.ModuleList(make(hidden_size, hidden_size) for _ in range(num_layers))
        if self.frame_size is not None:
            self._check_spatial(*self.frame_size)

    def _check_spatial(self, height: int, width: int) -> None:
        need = 2 ** (len(self.cells) // 2 - 1)
        if min(height, width) < need:
            raise ValueError(f"frames: H and W must be >= {need} for {len(self.cells) // 2 - 1} "
                             f"2x2 max pools, got {height}x{width}")

    def step(self, frame: Tensor, state, need_aux: bool = False):
        n = len(self.cells)
        half = n // 2
        states = [None] * n if state is None else state
        x = self.embed(frame)
        outputs, new = [], []
        for i, (cell, s) in enumerate(zip(self.cells, states)):
            s = cell(x, s)
            new.append(s)
            x = s[0]
            outputs.append(x)
            if i < half - 1:
                x = F.max_pool2d(x, 2)
            elif half <= i < n - 1:
                skip = outputs[n - 2 - i]
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear",
                                  align_corners=False) + skip
        return self.head(x), new, None
