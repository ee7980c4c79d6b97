"""Output gate of ST-LSTM and MK-LSTM (CELLS.md sections 2 and 3).

    h = sigmoid(o_partial + zo) * tanh(zl)

``o_partial`` is what the first stage summed (o_x + o_h for ST-LSTM, o3 + o5 for MK-LSTM),
``zo`` the memory-to-output convolution(s), ``zl`` the 1x1 convolution of the memories.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext
from ._common import grad_or_zeros, new_planes, planar


def output_gate_ref(o_partial: Tensor, zo: Tensor, zl: Tensor) -> Tensor:
    o = torch.sigmoid(o_partial + zo)
    return o * torch.tanh(zl)


@torch.library.custom_op("fastcells::output_gate", mutates_args=(), device_types="cpu")
def _output_gate_op(o_partial: Tensor, zo: Tensor, zl: Tensor) -> tuple[Tensor, Tensor]:
    h, o_pre = _ext.cpp_extension().output_gate_forward(planar(o_partial), planar(zo), planar(zl))
    return h, o_pre


@_output_gate_op.register_fake
def _(o_partial, zo, zl):
    return new_planes(zl, zl.shape[1]), new_planes(zl, zl.shape[1])


@torch.library.custom_op("fastcells::output_gate_backward", mutates_args=(),
                         device_types="cpu")
def _output_gate_backward_op(grad_h: Tensor, o_pre: Tensor, zl: Tensor) -> tuple[Tensor, Tensor]:
    d_o, d_l = _ext.cpp_extension().output_gate_backward(planar(grad_h), planar(o_pre), planar(zl))
    return d_o, d_l


@_output_gate_backward_op.register_fake
def _(grad_h, o_pre, zl):
    return new_planes(zl, zl.shape[1]), new_planes(zl, zl.shape[1])


def _setup_context(ctx, inputs, output):
    _, _, zl = inputs
    _, o_pre = output
    ctx.mark_non_differentiable(o_pre)
    ctx.save_for_backward(o_pre, zl)


def _backward(ctx, grad_h, _grad_o_pre):
    o_pre, zl = ctx.saved_tensors
    d_o, d_l = torch.ops.fastcells.output_gate_backward(grad_or_zeros(grad_h, zl), o_pre, zl)
    return d_o, d_o, d_l


_output_gate_op.register_autograd(_backward, setup_context=_setup_context)


def output_gate_cpp(o_partial: Tensor, zo: Tensor, zl: Tensor) -> Tensor:
    """Fused C++ kernel; same contract as :func:`output_gate_ref`."""
    h, _ = torch.ops.fastcells.output_gate(o_partial, zo, zl)
    return h
