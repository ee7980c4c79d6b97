"""Which fastcells cell a model stacks, built with the model's backend options."""
from __future__ import annotations

from torch import nn

from ..cells import (CausalLSTMCell, ConvLSTMCell, ConvTTLSTMCell, MKLSTMCell,
                     SpatioTemporalLSTMCell, SplitConvLSTMCell)

CELLS = {
    "convlstm": ConvLSTMCell,
    "mklstm": MKLSTMCell,
    "convttlstm": ConvTTLSTMCell,
    "stlstm": SpatioTemporalLSTMCell,
    "causal_lstm": CausalLSTMCell,
    "split_convlstm": SplitConvLSTMCell,  # OpenSTL's ConvLSTM layout
}


def cell_factory(kind: str, backend: str, memory_efficient: bool, **options):
    """``make(input_size, hidden_size)`` for cells of ``kind`` sharing ``options``."""
    if kind not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {kind!r}")
    cls = CELLS[kind]

    def make(input_size: int, hidden_size: int):
        return cls(input_size, hidden_size, backend=backend, memory_efficient=memory_efficient,
                   **options)

    return make


def embed_head(frame_channels: int, hidden_size: int):
    """The 1x1 convolutions between frames and the first/last hidden state (with bias), as in
    the MS-LSTM authors' harness (mazhf/MS-RNN ``conv_embed`` / ``conv_fc``)."""
    return (nn.Conv2d(frame_channels, hidden_size, 1), nn.Conv2d(hidden_size, frame_channels, 1))
