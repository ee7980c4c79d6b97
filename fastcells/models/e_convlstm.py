"""Enhanced ConvLSTM (seed 000): stacked ConvLSTM with temporal attention over past hidden
states, dropout, and a temporal consistency loss.

Seed 000 is a short report that names the ingredients without equations: "dropout layers
(0.3) in ConvLSTM cells", "temporal attention" (inspired by Conv-TT-LSTM's use of several
past hidden states) and a "temporal consistency loss: combined MSE and temporal difference
penalties, weighted". This module is our reading of it, written down here so it is
reproducible:

- ConvLSTM cells between a 1x1 embedding and a 1x1 head, as the MS-LSTM paper's ConvLSTM.
- Dropout (p = 0.3) on each layer's output before it enters the next layer (or the
  attention); the recurrent state itself is never dropped, so the cell equations hold.
- Temporal attention: the top layer's output ``h_t`` queries the last ``attention_window``
  top outputs ``h_{t-W+1} .. h_t`` (itself included). Per pixel, with 1x1 projections
  ``q = Wq h_t`` and ``k_j = Wk h_j`` (``attention_size`` channels, no key bias), the weights are
  ``softmax_j(<q, k_j> / sqrt(attention_size))`` and the context ``a_t = sum_j w_j h_j``;
  the head reads ``h_t + Wo a_t``.
- ``training_loss`` = MSE + ``consistency_weight`` * MSE of the frame differences
  (:func:`temporal_consistency_loss`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._cells import cell_factory, embed_head
from .rollout import RecurrentForecaster, TrainOutput


def temporal_consistency_loss(predictions: Tensor, targets: Tensor) -> Tensor:
    """MSE between the frame-to-frame differences of predictions and targets (B, T, C, H, W);
    zero when T < 2."""
    if predictions.shape[1] < 2:
        return predictions.new_zeros(())
    return F.mse_loss(predictions.diff(dim=1), targets.diff(dim=1))


class EnhancedConvLSTM(RecurrentForecaster):
    """Stacked ConvLSTM + dropout + temporal attention (module docstring for the design).

    Args:
        frame_channels: C of the frames.
        hidden_size, num_layers, kernel_size: the ConvLSTM stack.
        dropout: probability of the dropout between layers (seed 000: 0.3); active in
            ``train()`` mode only.
        attention_window: how many recent top-layer outputs the attention reads (>= 1).
        attention_size: channels of the query/key projections.
        consistency_weight: weight of the temporal consistency term in ``training_loss``.
        frame_size, input_len, pred_len, backend, memory_efficient: as for all models.

    Shapes: ``forward`` (B, T_in, C, H, W) -> (B, pred_len, C, H, W).
    """

    def __init__(self, frame_channels: int, hidden_size: int = 32, num_layers: int = 6,
                 kernel_size: int = 3, dropout: float = 0.3, attention_window: int = 4,
                 attention_size: int = 16, consistency_weight: float = 0.1, frame_size=None,
                 input_len: int = 10, pred_len: int = 10, backend: str = "auto",
                 memory_efficient: bool = False):
        super().__init__(frame_channels, frame_size, input_len, pred_len, backend)
        if num_layers < 1 or attention_window < 1 or attention_size < 1:
            raise ValueError(f"num_layers, attention_window and attention_size must be >= 1, "
                             f"got {num_layers}, {attention_window}, {attention_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        make = cell_factory("convlstm", backend, memory_efficient, kernel_size=kernel_size)
        self.embed, self.head = embed_head(frame_channels, hidden_size)
        self.cells = nn.ModuleList(make(hidden_size, hidden_size) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.attention_window = attention_window
        self.query = nn.Conv2d(hidden_size, attention_size, 1)
        # a key bias would add <q, b> to every score of a pixel: softmax cancels it
        self.key = nn.Conv2d(hidden_size, attention_size, 1, bias=False)
        self.attend_out = nn.Conv2d(hidden_size, hidden_size, 1)
        self.loss_weights = {"temporal_consistency": float(consistency_weight)}

    def step(self, frame: Tensor, state, need_aux: bool = False):
        states, memory = ([None] * len(self.cells), ()) if state is None else state
        x = self.embed(frame)
        new = []
        for cell, s in zip(self.cells, states):
            s = cell(x, s)
            new.append(s)
            x = self.dropout(s[0])
        # memory: (value, key) of the last attention_window - 1 top outputs, oldest first
        key = self.key(x)
        values = torch.stack([v for v, _ in memory] + [x], dim=1)     # (B, W, C, H, W)
        keys = torch.stack([k for _, k in memory] + [key], dim=1)     # (B, W, A, H, W)
        q = self.query(x)
        scores = torch.einsum("bahw,bjahw->bjhw", q, keys) / math.sqrt(q.shape[1])
        weights = scores.softmax(dim=1)
        context = torch.einsum("bjhw,bjchw->bchw", weights, values)
        out = self.head(x + self.attend_out(context))
        keep = self.attention_window - 1
        memory = (memory + ((x, key),))[-keep:] if keep else ()
        return out, (new, memory), None

    def forward_train(self, frames: Tensor, mask: Tensor | None = None) -> TrainOutput:
        out = super().forward_train(frames, mask)
        losses = {"temporal_consistency": temporal_consistency_loss(out.predictions,
                                                                    out.targets)}
        return TrainOutput(out.predictions, out.targets, losses)
