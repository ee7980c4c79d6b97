"""ConvLSTM gate math (CELLS.md section 1; also Conv-TT-LSTM's gate stage, section 4).

    z = [zi; zf; zo; zg]                       (B, 4C, H, W), gate order i, f, o, g
    c = sigmoid(zf + forget_bias [+ wcf*c_prev]) * c_prev + sigmoid(zi [+ wci*c_prev]) * tanh(zg)
    h = sigmoid(zo [+ wco*c]) * tanh(c)

``peephole`` is None or a (3, C) tensor of per-channel weights (wci, wcf, wco).
Both functions return ``(h, c)``, each (B, C, H, W).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _ext
from . import _cuda, _triton
from ._common import autograd_pair, grad_or_zeros, new_planes, planar


def convlstm_gates_ref(z: Tensor, c_prev: Tensor, peephole: Optional[Tensor] = None,
                       forget_bias: float = 0.0) -> Tuple[Tensor, Tensor]:
    """Eager reference, a line-by-line transcription of the equations."""
    zi, zf, zo, zg = torch.split(z, c_prev.shape[1], dim=1)
    if peephole is not None:
        w_ci, w_cf, w_co = (w.view(1, -1, 1, 1) for w in peephole)
        zi = zi + w_ci * c_prev
        zf = zf + w_cf * c_prev
    i = torch.sigmoid(zi)
    f = torch.sigmoid(zf + forget_bias)
    g = torch.tanh(zg)
    c = f * c_prev + i * g
    if peephole is not None:
        zo = zo + w_co * c
    o = torch.sigmoid(zo)
    h = o * torch.tanh(c)
    return h, c


def _forward_impl(z: Tensor, c_prev: Tensor, peephole: Optional[Tensor],
                  forget_bias: float) -> Tuple[Tensor, Tensor, Tensor]:
    h, c, acts = _ext.cpp_extension().convlstm_gates_forward(planar(z), planar(c_prev),
                                                              peephole, forget_bias)
    return h, c, acts


_forward_op = torch.library.custom_op("fastcells::convlstm_gates", mutates_args=(),
                                      device_types="cpu")(_forward_impl)


@_forward_op.register_fake
def _(z, c_prev, peephole, forget_bias):
    C = c_prev.shape[1]
    return new_planes(c_prev, C), new_planes(c_prev, C), new_planes(c_prev, 4 * C)


def _backward_impl(grad_h: Tensor, grad_c: Tensor, acts: Tensor, c_prev: Tensor, c: Tensor,
                   peephole: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    dz, dc_prev, dpeep = _ext.cpp_extension().convlstm_gates_backward(
        planar(grad_h), planar(grad_c), acts, planar(c_prev), c, peephole)
    # custom ops cannot return None: an empty tensor stands for "no peephole".
    return dz, dc_prev, dpeep if dpeep is not None else acts.new_empty(0)


_backward_op = torch.library.custom_op("fastcells::convlstm_gates_backward", mutates_args=(),
                                       device_types="cpu")(_backward_impl)


@_backward_op.register_fake
def _(grad_h, grad_c, acts, c_prev, c, peephole):
    dpeep = peephole.new_empty(peephole.shape) if peephole is not None else acts.new_empty(0)
    return new_planes(acts, acts.shape[1]), new_planes(c_prev, c_prev.shape[1]), dpeep


def _setup_context(ctx, inputs, output):
    _, c_prev, peephole, _ = inputs
    _, c, acts = output
    # The gate activations replace the pre-activations z (same size; z is freed), so the
    # backward needs no sigmoid; c is kept alive by the next step anyway.
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)  # no zero-filled grads for unused outputs
    ctx.save_for_backward(acts, c_prev, c, peephole)


def _backward(ctx, grad_h, grad_c, _grad_acts, kernel):
    acts, c_prev, c, peephole = ctx.saved_tensors
    dz, dc_prev, dpeep = kernel(grad_or_zeros(grad_h, c_prev), grad_or_zeros(grad_c, c_prev),
                                acts, c_prev, c, peephole)
    return dz, dc_prev, (dpeep if peephole is not None else None), None


_apply = autograd_pair("ConvLSTMGates", _forward_impl, _forward_op, _backward_impl,
                       _backward_op, _setup_context, _backward)


def convlstm_gates_cpp(z: Tensor, c_prev: Tensor, peephole: Optional[Tensor] = None,
                       forget_bias: float = 0.0) -> Tuple[Tensor, Tensor]:
    """Fused C++ kernel; same contract as :func:`convlstm_gates_ref`."""
    if peephole is not None:
        peephole = peephole.contiguous()
    h, c, _ = _apply(z, c_prev, peephole, float(forget_bias))
    return h, c


# ----------------------------------------------------------------------------- Triton
_triton_apply = autograd_pair(
    "ConvLSTMGatesTriton",
    _triton.eager("convlstm_gates", "forward"),
    _triton.library_op("convlstm_gates_triton", "(Tensor z, Tensor c_prev, Tensor? peephole, "
                       "float forget_bias) -> (Tensor, Tensor, Tensor)",
                       "convlstm_gates", "forward"),
    _triton.eager("convlstm_gates", "backward"),
    _triton.library_op("convlstm_gates_triton_backward",
                       "(Tensor grad_h, Tensor grad_c, Tensor acts, Tensor c_prev, Tensor c, "
                       "Tensor? peephole) -> (Tensor, Tensor, Tensor)",
                       "convlstm_gates", "backward"),
    _setup_context, _backward)


def convlstm_gates_triton(z: Tensor, c_prev: Tensor, peephole: Optional[Tensor] = None,
                          forget_bias: float = 0.0) -> Tuple[Tensor, Tensor]:
    """Fused Triton kernels; same contract as :func:`convlstm_gates_ref`."""
    if peephole is not None:
        peephole = peephole.contiguous()
    h, c, _ = _triton_apply(z, c_prev, peephole, float(forget_bias))
    return h, c


# ----------------------------------------------------------------------------- CUDA C++
# The kernels of csrc/cuda/ with the autograd formula above (_setup_context, _backward).


def _cuda_forward_impl(z: Tensor, c_prev: Tensor, peephole: Tensor | None,
                       forget_bias: float) -> tuple[Tensor, Tensor, Tensor]:
    h, c, acts = _cuda.extension().convlstm_gates_forward(
        _cuda.strided(z), _cuda.strided(c_prev), peephole, forget_bias, _cuda.channels_last(z))
    return h, c, acts


_cuda_forward_op = torch.library.custom_op("fastcells::convlstm_gates_cuda", mutates_args=(),
                                           device_types="cuda")(_cuda_forward_impl)


@_cuda_forward_op.register_fake
def _(z, c_prev, peephole, forget_bias):
    C, cl = c_prev.shape[1], _cuda.channels_last(z)
    return (_cuda.new_output(c_prev, C, cl), _cuda.new_output(c_prev, C, cl),
            _cuda.new_output(c_prev, 4 * C, cl))


def _cuda_backward_impl(grad_h: Tensor, grad_c: Tensor, acts: Tensor, c_prev: Tensor, c: Tensor,
                        peephole: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    dz, dc_prev, dpeep = _cuda.extension().convlstm_gates_backward(
        _cuda.strided(grad_h), _cuda.strided(grad_c), _cuda.strided(acts),
        _cuda.strided(c_prev), _cuda.strided(c), peephole, _cuda.channels_last(acts))
    return dz, dc_prev, dpeep if dpeep is not None else acts.new_empty(0)


_cuda_backward_op = torch.library.custom_op("fastcells::convlstm_gates_cuda_backward",
                                            mutates_args=(),
                                            device_types="cuda")(_cuda_backward_impl)


@_cuda_backward_op.register_fake
def _(grad_h, grad_c, acts, c_prev, c, peephole):
    C, cl = c_prev.shape[1], _cuda.channels_last(acts)
    dpeep = peephole.new_empty(peephole.shape) if peephole is not None else acts.new_empty(0)
    return _cuda.new_output(c_prev, 4 * C, cl), _cuda.new_output(c_prev, C, cl), dpeep


_cuda_apply = autograd_pair("ConvLSTMGatesCUDA", _cuda_forward_impl, _cuda_forward_op,
                            _cuda_backward_impl, _cuda_backward_op, _setup_context, _backward)


def convlstm_gates_cuda(z: Tensor, c_prev: Tensor, peephole: Tensor | None = None,
                        forget_bias: float = 0.0) -> tuple[Tensor, Tensor]:
    """Fused CUDA C++ kernel; same contract as :func:`convlstm_gates_ref`."""
    if peephole is not None:
        peephole = peephole.contiguous()
    h, c, _ = _cuda_apply(z, c_prev, peephole, float(forget_bias))
    return h, c
