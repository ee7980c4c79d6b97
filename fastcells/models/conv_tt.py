"""The Conv-TT-LSTM video prediction network of seed 004 (Appendix B.2, Fig. 6a;
NVlabs/conv-tt-lstm ``ConvLSTMNet``), with Conv-TT-LSTM cells (``conv_tt_lstm``) or
ConvLSTM cells (``conv_tt_lstm_baseline``).

Blocks of layers (the paper: 4 blocks of 3 layers with 32, 48, 48, 32 channels). After
block ``b >= skip_stride`` its output is concatenated over the channels with the output of
block ``b - skip_stride`` (stride 2: layers (3, 9) and (6, 12)); the result feeds the next
block, and after the last block a 1x1 convolution (with bias) gives the frame, optionally
through a sigmoid. The first layer reads the frame itself (no embedding).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._cells import cell_factory
from .rollout import RecurrentForecaster


class ConvTTNet(RecurrentForecaster):
    """Blocks of Conv-TT-LSTM (or ConvLSTM) cells with skip concatenations.

    Args:
        frame_channels: C of the frames.
        layers_per_block: layers in each block, e.g. (3, 3, 3, 3).
        hidden_channels: channels of each block, e.g. (32, 48, 48, 32).
        skip_stride: concatenate block b's output with block b - skip_stride's
            (None: no skip connections).
        cell: ``"convttlstm"`` or ``"convlstm"``.
        kernel_size: kernel of every cell convolution (the paper: 5).
        order, steps, rank: Conv-TT-LSTM's N, M, R (the paper: 3, 3, 8); unused by ConvLSTM.
        output_sigmoid: a sigmoid after the output convolution (the paper's KTH setting).
        frame_size, input_len, pred_len, backend, memory_efficient: as for all models.

    Shapes: ``forward`` (B, T_in, C, H, W) -> (B, pred_len, C, H, W).
    """

    def __init__(self, frame_channels: int, layers_per_block=(3, 3, 3, 3),
                 hidden_channels=(32, 48, 48, 32), skip_stride: int | None = 2,
                 cell: str = "convttlstm", kernel_size: int = 5, order: int = 3, steps: int = 3,
                 rank: int = 8, output_sigmoid: bool = False, frame_size=None,
                 input_len: int = 10, pred_len: int = 10, backend: str = "auto",
                 memory_efficient: bool = False):
        super().__init__(frame_channels, frame_size, input_len, pred_len, backend)
        layers_per_block, hidden_channels = tuple(layers_per_block), tuple(hidden_channels)
        if (len(layers_per_block) != len(hidden_channels) or not layers_per_block
                or min(layers_per_block) < 1):
            raise ValueError(f"layers_per_block and hidden_channels must be equally long, "
                             f"non-empty, with >= 1 layer per block; got {layers_per_block}, "
                             f"{hidden_channels}")
        if skip_stride is not None and skip_stride < 1:
            raise ValueError(f"skip_stride must be >= 1 or None, got {skip_stride}")
        options = {"kernel_size": kernel_size}
        if cell == "convttlstm":
            options.update(order=order, steps=steps, rank=rank)
        elif cell != "convlstm":
            raise ValueError(f"cell must be 'convttlstm' or 'convlstm', got {cell!r}")
        make = cell_factory(cell, backend, memory_efficient, **options)
        self.layers_per_block, self.hidden_channels = layers_per_block, hidden_channels
        self.skip_stride = skip_stride
        self.output_sigmoid = bool(output_sigmoid)
        self.blocks = nn.ModuleList()
        channels = frame_channels
        for b, (n, hidden) in enumerate(zip(layers_per_block, hidden_channels)):
            block = nn.ModuleList()
            for i in range(n):
                block.append(make(channels if i == 0 else hidden, hidden))
            self.blocks.append(block)
            channels = hidden + (hidden_channels[b - skip_stride] if self._skips(b) else 0)
        self.output = nn.Conv2d(channels, frame_channels, 1)

    def _skips(self, b: int) -> bool:
        return self.skip_stride is not None and b >= self.skip_stride

    def step(self, frame: Tensor, state, need_aux: bool = False):
        states = [[None] * len(block) for block in self.blocks] if state is None else state
        x, block_outputs, new = frame, [], []
        for b, (block, block_states) in enumerate(zip(self.blocks, states)):
            block_new = []
            for cell, s in zip(block, block_states):
                s = cell(x, s)
                block_new.append(s)
                x = s[0]
            new.append(block_new)
            block_outputs.append(x)
            if self._skips(b):
                x = torch.cat([x, block_outputs[b - self.skip_stride]], dim=1)
        y = self.output(x)
        return (torch.sigmoid(y) if self.output_sigmoid else y), new, None
