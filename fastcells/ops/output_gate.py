"""Output gate of ST-LSTM and MK-LSTM (CELLS.md sections 2 and 3).

    h = sigmoid(o_partial + zo) * tanh(zl)

``o_partial`` is what the first stage summed (o_x + o_h for ST-LSTM, o3 + o5 for MK-LSTM),
``zo`` the memory-to-output convolution(s), ``zl`` the 1x1 convolution of the memories.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext
from . import _cuda, _triton
from ._common import autograd_pair, grad_or_zeros, new_planes, planar


def output_gate_ref(o_partial: Tensor, zo: Tensor, zl: Tensor) -> Tensor:
    o = torch.sigmoid(o_partial + zo)
    return o * torch.tanh(zl)


def _forward_impl(o_partial: Tensor, zo: Tensor, zl: Tensor) -> tuple[Tensor, Tensor]:
    h, acts = _ext.cpp_extension().output_gate_forward(planar(o_partial), planar(zo), planar(zl))
    return h, acts


_forward_op = torch.library.custom_op("fastcells::output_gate", mutates_args=(),
                                      device_types="cpu")(_forward_impl)


@_forward_op.register_fake
def _(o_partial, zo, zl):
    return new_planes(zl, zl.shape[1]), new_planes(zl, 2 * zl.shape[1])


def _backward_impl(grad_h: Tensor, acts: Tensor) -> tuple[Tensor, Tensor]:
    d_o, d_l = _ext.cpp_extension().output_gate_backward(planar(grad_h), acts)
    return d_o, d_l


_backward_op = torch.library.custom_op("fastcells::output_gate_backward", mutates_args=(),
                                       device_types="cpu")(_backward_impl)


@_backward_op.register_fake
def _(grad_h, acts):
    return new_planes(grad_h, grad_h.shape[1]), new_planes(grad_h, grad_h.shape[1])


def _setup_context(ctx, inputs, output):
    _, acts = output
    # (o, tanh(zl)) replace the inputs for backward: same bytes as (o_pre, zl), no exp.
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)  # no zero-filled grads for unused outputs
    ctx.save_for_backward(acts)


def _backward(ctx, grad_h, _grad_acts, kernel):
    (acts,) = ctx.saved_tensors
    d_o, d_l = kernel(grad_or_zeros(grad_h, acts, acts.shape[1] // 2), acts)
    return d_o, d_o, d_l


_apply = autograd_pair("OutputGate", _forward_impl, _forward_op, _backward_impl, _backward_op,
                       _setup_context, _backward)


def output_gate_cpp(o_partial: Tensor, zo: Tensor, zl: Tensor) -> Tensor:
    """Fused C++ kernel; same contract as :func:`output_gate_ref`."""
    h, _ = _apply(o_partial, zo, zl)
    return h


# ----------------------------------------------------------------------------- Triton
_triton_apply = autograd_pair(
    "OutputGateTriton",
    _triton.eager("output_gate", "forward"),
    _triton.library_op("output_gate_triton",
                       "(Tensor o_partial, Tensor zo, Tensor zl) -> (Tensor, Tensor)",
                       "output_gate", "forward"),
    _triton.eager("output_gate", "backward"),
    _triton.library_op("output_gate_triton_backward",
                       "(Tensor grad_h, Tensor acts) -> (Tensor, Tensor)",
                       "output_gate", "backward"),
    _setup_context, _backward)


def output_gate_triton(o_partial: Tensor, zo: Tensor, zl: Tensor) -> Tensor:
    """Fused Triton kernels; same contract as :func:`output_gate_ref`."""
    h, _ = _triton_apply(o_partial, zo, zl)
    return h


# ----------------------------------------------------------------------------- CUDA C++
# The kernels of csrc/cuda/ with the autograd formula above (_setup_context, _backward).


def _cuda_forward_impl(o_partial: Tensor, zo: Tensor, zl: Tensor) -> tuple[Tensor, Tensor]:
    h, acts = _cuda.extension().output_gate_forward(
        _cuda.strided(o_partial), _cuda.strided(zo), _cuda.strided(zl), _cuda.channels_last(zl))
    return h, acts


_cuda_forward_op = torch.library.custom_op("fastcells::output_gate_cuda", mutates_args=(),
                                           device_types="cuda")(_cuda_forward_impl)


@_cuda_forward_op.register_fake
def _(o_partial, zo, zl):
    C, cl = zl.shape[1], _cuda.channels_last(zl)
    return _cuda.new_output(zl, C, cl), _cuda.new_output(zl, 2 * C, cl)


def _cuda_backward_impl(grad_h: Tensor, acts: Tensor) -> tuple[Tensor, Tensor]:
    d_o, d_l = _cuda.extension().output_gate_backward(
        _cuda.strided(grad_h), _cuda.strided(acts), _cuda.channels_last(acts))
    return d_o, d_l


_cuda_backward_op = torch.library.custom_op("fastcells::output_gate_cuda_backward",
                                            mutates_args=(),
                                            device_types="cuda")(_cuda_backward_impl)


@_cuda_backward_op.register_fake
def _(grad_h, acts):
    C, cl = grad_h.shape[1], _cuda.channels_last(acts)
    return _cuda.new_output(grad_h, C, cl), _cuda.new_output(grad_h, C, cl)


_cuda_apply = autograd_pair("OutputGateCUDA", _cuda_forward_impl, _cuda_forward_op,
                            _cuda_backward_impl, _cuda_backward_op, _setup_context, _backward)


def output_gate_cuda(o_partial: Tensor, zo: Tensor, zl: Tensor) -> Tensor:
    """Fused CUDA C++ kernel; same contract as :func:`output_gate_ref`."""
    h, _ = _cuda_apply(o_partial, zo, zl)
    return h
