"""Stacked recurrent cells between a 1x1 embedding and a 1x1 head: ``convlstm`` (the MS-LSTM
paper's ConvLSTM baseline) and ``tms_lstm`` (stacked MK-LSTM), as in mazhf/MS-RNN."""
from __future__ import annotations

from torch import Tensor, nn

from ._cells import cell_factory, embed_head
from .rollout import RecurrentForecaster


def cell_options(cell: str, kernel_size: int, kernel_sizes) -> dict:
    """The kernel option of the ConvLSTM (one kernel) or MK-LSTM (two kernels) cell."""
    if cell == "mklstm":
        return {"kernel_sizes": tuple(kernel_sizes)}
    if cell == "convlstm":
        return {"kernel_size": kernel_size}
    raise ValueError(f"cell must be 'convlstm' or 'mklstm', got {cell!r}")


class StackedForecaster(RecurrentForecaster):
    """``embed (1x1) -> num_layers cells at full resolution -> head (1x1)`` per step.

    Args:
        frame_channels: C of the frames.
        hidden_size: channels of every cell (the MS-LSTM paper: 32).
        num_layers: number of stacked cells (the paper: 6).
        cell: ``"convlstm"`` (ConvLSTM, ``kernel_size``) or ``"mklstm"`` (MK-LSTM,
            ``kernel_sizes``).
        frame_size, input_len, pred_len, backend: see :class:`Forecaster`.
        memory_efficient: passed to every cell.

    Shapes: ``forward`` (B, T_in, C, H, W) -> (B, pred_len, C, H, W); any H, W unless
    ``frame_size`` fixes them. State per step: one cell state tuple per layer.
    """

    def __init__(self, frame_channels: int, hidden_size: int = 32, num_layers: int = 6,
                 cell: str = "convlstm", kernel_size: int = 3, kernel_sizes=(3, 5),
                 frame_size=None, input_len: int = 10, pred_len: int = 10,
                 backend: str = "auto", memory_efficient: bool = False):
        super().__init__(frame_channels, frame_size, input_len, pred_len, backend)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        make = cell_factory(cell, backend, memory_efficient,
                            **cell_options(cell, kernel_size, kernel_sizes))
        self.embed, self.head = embed_head(frame_channels, hidden_size)
        self.cells = nn.ModuleList(make(hidden_size, hidden_size) for _ in range(num_layers))

    def step(self, frame: Tensor, state, need_aux: bool = False):
        states = [None] * len(self.cells) if state is None else state
        x = self.embed(frame)
        new = []
        for cell, s in zip(self.cells, states):
            s = cell(x, s)
            x = s[0]
            new.append(s)
        return self.head(x), new, None
