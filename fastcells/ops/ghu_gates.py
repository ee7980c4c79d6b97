"""Gate math of PredRNN++'s gradient highway unit (CELLS.md section 6, OpenSTL ``GHU``)::

    p, u = split(zx + zz, C)          zx = x_concat(x), zz = z_concat(z_prev): 2C each
    z = sigmoid(u) * tanh(p) + (1 - sigmoid(u)) * z_prev

The fused forward saves ``(tanh(p), sigmoid(u))`` (2C) for backward in place of the two
pre-activations; zx and zz are summed before the nonlinearities, so backward computes one
(B, 2C) gradient and hands it to both.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext
from . import _cuda, _triton
from ._common import autograd_pair, grad_or_zeros, new_planes, planar


def ghu_gates_ref(zx: Tensor, zz: Tensor, z_prev: Tensor) -> Tensor:
    """Returns the new z."""
    p, u = torch.split(zx + zz, z_prev.shape[1], dim=1)
    p = torch.tanh(p)
    u = torch.sigmoid(u)
    return u * p + (1 - u) * z_prev


def _setup(ctx, inputs, output):
    _, _, z_prev = inputs
    _, acts = output
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)  # no zero-filled grads for unused outputs
    ctx.save_for_backward(acts, z_prev)


def _backward(ctx, grad_z, _grad_acts, kernel):
    acts, z_prev = ctx.saved_tensors
    d_pu, d_prev = kernel(grad_or_zeros(grad_z, z_prev), acts, z_prev)
    return d_pu, d_pu, d_prev


# ----------------------------------------------------------------------------- C++
def _forward_impl(zx: Tensor, zz: Tensor, z_prev: Tensor) -> tuple[Tensor, Tensor]:
    z, acts = _ext.cpp_extension().ghu_gates_forward(planar(zx), planar(zz), planar(z_prev))
    return z, acts


_forward_op = torch.library.custom_op("fastcells::ghu_gates", mutates_args=(),
                                      device_types="cpu")(_forward_impl)


@_forward_op.register_fake
def _(zx, zz, z_prev):
    C = z_prev.shape[1]
    return new_planes(z_prev, C), new_planes(z_prev, 2 * C)


def _backward_impl(grad_z: Tensor, acts: Tensor, z_prev: Tensor) -> tuple[Tensor, Tensor]:
    d_pu, d_prev = _ext.cpp_extension().ghu_gates_backward(planar(grad_z), acts, planar(z_prev))
    return d_pu, d_prev


_backward_op = torch.library.custom_op("fastcells::ghu_gates_backward", mutates_args=(),
                                       device_types="cpu")(_backward_impl)


@_backward_op.register_fake
def _(grad_z, acts, z_prev):
    C = z_prev.shape[1]
    return new_planes(z_prev, 2 * C), new_planes(z_prev, C)


_apply = autograd_pair("GHUGates", _forward_impl, _forward_op, _backward_impl, _backward_op,
                       _setup, _backward)


def ghu_gates_cpp(zx: Tensor, zz: Tensor, z_prev: Tensor) -> Tensor:
    """Fused C++ kernel; same contract as :func:`ghu_gates_ref`."""
    return _apply(zx, zz, z_prev)[0]


# ----------------------------------------------------------------------------- Triton
_triton_apply = autograd_pair(
    "GHUGatesTriton",
    _triton.eager("ghu_gates", "forward"),
    _triton.library_op("ghu_gates_triton",
                       "(Tensor zx, Tensor zz, Tensor z_prev) -> (Tensor, Tensor)",
                       "ghu_gates", "forward"),
    _triton.eager("ghu_gates", "backward"),
    _triton.library_op("ghu_gates_triton_backward",
                       "(Tensor grad_z, Tensor acts, Tensor z_prev) -> (Tensor, Tensor)",
                       "ghu_gates", "backward"),
    _setup, _backward)


def ghu_gates_triton(zx: Tensor, zz: Tensor, z_prev: Tensor) -> Tensor:
    """Fused Triton kernels; same contract as :func:`ghu_gates_ref`."""
    return _triton_apply(zx, zz, z_prev)[0]


# ----------------------------------------------------------------------------- CUDA C++
def _cuda_forward_impl(zx: Tensor, zz: Tensor, z_prev: Tensor) -> tuple[Tensor, Tensor]:
    z, acts = _cuda.extension().ghu_gates_forward(
        _cuda.strided(zx), _cuda.strided(zz), _cuda.strided(z_prev), _cuda.channels_last(zx))
    return z, acts


_cuda_forward_op = torch.library.custom_op("fastcells::ghu_gates_cuda", mutates_args=(),
                                           device_types="cuda")(_cuda_forward_impl)


@_cuda_forward_op.register_fake
def _(zx, zz, z_prev):
    C, cl = z_prev.shape[1], _cuda.channels_last(zx)
    return _cuda.new_output(z_prev, C, cl), _cuda.new_output(z_prev, 2 * C, cl)


def _cuda_backward_impl(grad_z: Tensor, acts: Tensor, z_prev: Tensor) -> tuple[Tensor, Tensor]:
    d_pu, d_prev = _cuda.extension().ghu_gates_backward(
        _cuda.strided(grad_z), _cuda.strided(acts), _cuda.strided(z_prev),
        _cuda.channels_last(acts))
    return d_pu, d_prev


_cuda_backward_op = torch.library.custom_op("fastcells::ghu_gates_cuda_backward",
                                            mutates_args=(),
                                            device_types="cuda")(_cuda_backward_impl)


@_cuda_backward_op.register_fake
def _(grad_z, acts, z_prev):
    C, cl = z_prev.shape[1], _cuda.channels_last(acts)
    return _cuda.new_output(z_prev, 2 * C, cl), _cuda.new_output(z_prev, C, cl)


_cuda_apply = autograd_pair("GHUGatesCUDA", _cuda_forward_impl, _cuda_forward_op,
                            _cuda_backward_impl, _cuda_backward_op, _setup, _backward)


def ghu_gates_cuda(zx: Tensor, zz: Tensor, z_prev: Tensor) -> Tensor:
    """Fused CUDA C++ kernel; same contract as :func:`ghu_gates_ref`."""
    return _cuda_apply(zx, zz, z_prev)[0]
