"""NVlabs/conv-tt-lstm ``ConvLSTMCell`` and ``ConvTTLSTMCell``: stateful cells,
``forward(inputs, first_step=False, checkpointing=False) -> outputs``, that keep their
hidden/cell states (and Conv-TT-LSTM's ring buffer of past hidden states) as attributes.

Two published layouts of ``ConvTTLSTMCell`` are recognised: the optimized one (``layers_``
are Conv2d over the window concatenated on channels) and the ``version="v4"`` one
(``layers_`` are Conv3d over the window stacked on a last axis, or Conv2d when
``concat_temporal=False``). ``checkpointing=True`` runs the fastcells step in its
memory-efficient mode (recompute in backward), as NVlabs checkpoints the gate block.
"""
from __future__ import annotations

import torch
from torch import nn

from ..cells import ConvLSTMCell, ConvTTLSTMCell
from ..cells.convttlstm import RingHistory
from .dropin import (
    PROBE_SHAPE,
    DropIn,
    Family,
    Skip,
    expect_channels,
    odd_square_kernel,
    randn,
    required_attrs,
    same_bias,
)
from .ndrplz import convert_one_conv


def _zeros(inputs, channels):
    b, _, h, w = inputs.shape
    return torch.zeros(b, channels, h, w, dtype=inputs.dtype, device=inputs.device)


class _Stateful:
    def _checked_step(self, inputs, state, checkpointing):
        return self._run(inputs, self.check_state(state, inputs),
                         memory_efficient=True if checkpointing else None)

    def _require_state(self):
        if getattr(self, "cell_states", None) is None:
            raise RuntimeError(f"{type(self).__name__}: no state yet; call it with "
                               f"first_step=True on the first step of a sequence")


class NVlabsConvLSTMCell(_Stateful, DropIn, ConvLSTMCell):
    """Drop-in for NVlabs' ConvLSTMCell (state in ``hidden_states``, ``cell_states``)."""

    family = "NVlabs/conv-tt-lstm ConvLSTMCell"

    def initialize(self, inputs):
        self.hidden_states = _zeros(inputs, self.hidden_channels)
        self.cell_states = _zeros(inputs, self.hidden_channels)

    def forward(self, inputs, first_step: bool = False, checkpointing: bool = False):
        """inputs (B, Cin, H, W) -> hidden state (B, C, H, W); the state advances in place."""
        self.check_input(inputs, "inputs")
        if first_step:
            self.initialize(inputs)
        self._require_state()
        self.hidden_states, self.cell_states = self._checked_step(
            inputs, (self.hidden_states, self.cell_states), checkpointing)
        return self.hidden_states


class NVlabsConvTTLSTMCell(_Stateful, DropIn, ConvTTLSTMCell):
    """Drop-in for NVlabs' ConvTTLSTMCell: ``hidden_states`` is the ring buffer of the last
    ``steps`` hidden states, ``hidden_pointer`` the slot written next (the oldest)."""

    family = "NVlabs/conv-tt-lstm ConvTTLSTMCell"

    def initialize(self, inputs):
        self.hidden_states = [_zeros(inputs, self.hidden_channels) for _ in range(self.steps)]
        self.hidden_pointer = 0
        self.cell_states = _zeros(inputs, self.hidden_channels)

    init_states = initialize  # the name in NVlabs' "v4" file

    def forward(self, inputs, first_step: bool = False, checkpointing: bool = False):
        """inputs (B, Cin, H, W) -> hidden state (B, C, H, W); the state advances in place."""
        self.check_input(inputs, "inputs")
        if first_step:
            self.initialize(inputs)
        self._require_state()
        # NVlabs' list and pointer are a ring buffer already: the step reads the slots where
        # they are and writes h into the oldest one's place, as NVlabs' forward does.
        ring = RingHistory.over(self.hidden_states, self.hidden_pointer)
        h, self.cell_states, ring = self._checked_step(
            inputs, (ring[-1], self.cell_states, ring), checkpointing)
        self.hidden_states, self.hidden_pointer = ring.slots, ring.head
        return h

    def _params(self):
        params = {}
        for level, conv in enumerate(self.layers_):
            w = conv.weight
            if w.dim() == 4:  # Conv2d over the window concatenated on channels, oldest first
                r, dc, kh, kw = w.shape
                w = w.view(r, self.lags, dc // self.lags, kh, kw).permute(0, 2, 3, 4, 1)
            params[f"preprocess.{level}.weight"] = w
            if conv.bias is not None:
                params[f"preprocess.{level}.bias"] = conv.bias
        for level, conv in enumerate(self.layers):
            params[f"factors.{level}.weight"] = conv.weight
            if conv.bias is not None:
                params[f"factors.{level}.bias"] = conv.bias
        return params


def convert_convlstm(module: nn.Module, backend: str, memory_efficient: bool = False):
    return convert_one_conv(NVlabsConvLSTMCell, module, int(module.input_channels),
                            int(module.hidden_channels), backend, memory_efficient)


def convert_convttlstm(module: nn.Module, backend: str, memory_efficient: bool = False):
    required_attrs(module, ("steps", "order", "lags", "layers", "layers_"))
    cin, C = int(module.input_channels), int(module.hidden_channels)
    order, steps, lags = int(module.order), int(module.steps), int(module.lags)
    version = getattr(module, "version", None)
    if version not in (None, "v4"):
        raise Skip(f"version={version!r}: fastcells implements the linear-time CTT "
                   f"recurrence of version v4 (and the optimized code)")
    if version == "v4" and steps != order:
        raise Skip("version v4 with steps != order: that code advances its ring buffer "
                   "modulo order, which fastcells does not reproduce")
    if lags != steps - order + 1 or not 1 <= order <= steps:
        raise Skip(f"lags={lags} with order={order}, steps={steps}: expected steps-order+1")
    if len(module.layers) != order or len(module.layers_) != order:
        raise Skip(f"{len(module.layers)} layers and {len(module.layers_)} layers_ for "
                   f"order {order}")
    convs = {f"layers.{i}": m for i, m in enumerate(module.layers)}
    convs |= {f"layers_.{i}": m for i, m in enumerate(module.layers_)}
    kernels = {odd_square_kernel(m, name) for name, m in convs.items()}
    if len(kernels) != 1:
        raise Skip(f"convolutions with different kernels {sorted(kernels)}")
    k = kernels.pop()
    rank = module.layers_[0].out_channels
    for i, m in enumerate(module.layers):
        last = i == order - 1
        expect_channels(m, f"layers.{i}", rank + cin if last else rank, 4 * C if last else rank)
    for i, m in enumerate(module.layers_):
        if isinstance(m, nn.Conv3d):
            if m.kernel_size[2] != lags or m.padding[2] != 0 or m.stride[2] != 1:
                raise Skip(f"layers_.{i} is a Conv3d with temporal kernel {m.kernel_size[2]}, "
                           f"padding {m.padding[2]}; expected the {lags} lags, no padding")
            expect_channels(m, f"layers_.{i}", C, rank)
        else:
            expect_channels(m, f"layers_.{i}", lags * C, rank)
    same_bias(convs)
    return NVlabsConvTTLSTMCell.adopt(
        module, {"layers": module.layers, "layers_": module.layers_}, backend,
        memory_efficient, input_size=cin, hidden_size=C, order=order, steps=steps, rank=rank,
        kernel_size=k)


def _run_stateful(module: nn.Module, gen: torch.Generator, steps: int) -> list:
    b, h, w = PROBE_SHAPE
    outputs = []
    for t in range(steps):
        outputs.append(module(randn(gen, b, module.input_channels, h, w), first_step=t == 0))
    return outputs


def run_convlstm(module: nn.Module, gen: torch.Generator) -> list:
    return _run_stateful(module, gen, 3)


def run_convttlstm(module: nn.Module, gen: torch.Generator) -> list:
    # enough steps for the ring buffer to wrap around twice
    return _run_stateful(module, gen, 2 * int(module.steps) + 1)


CONVLSTM = Family("NVlabs/conv-tt-lstm ConvLSTMCell", "ConvLSTMCell",
                  ("input_channels", "hidden_channels", "conv"), convert_convlstm, run_convlstm)
CONVTTLSTM = Family("NVlabs/conv-tt-lstm ConvTTLSTMCell", "ConvTTLSTMCell",
                    ("input_channels", "hidden_channels", "layers", "layers_"),
                    convert_convttlstm, run_convttlstm)
