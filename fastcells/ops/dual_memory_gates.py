"""First-stage gate math of the two-memory cells: ST-LSTM (PredRNN) and MK-LSTM (MS-LSTM).

ST-LSTM, CELLS.md section 2 (zx: 7C in order i, f, g, i', f', g', o; zh: 4C i, f, g, o;
zm: 3C i', f', g')::

    c = sigmoid(f_x + f_h + b) * c_prev + sigmoid(i_x + i_h) * tanh(g_x + g_h)
    m = sigmoid(f'_x + f_m + b) * m_prev + sigmoid(i'_x + i_m) * tanh(g'_x + g_m)
    o_partial = o_x + o_h

with the forget bias ``b`` 1.0 (thuml's and OpenSTL's ``_forget_bias``, the default) or, as
MS-RNN's PredRNN cells have none, 0.0.

MK-LSTM, CELLS.md section 3 (z1, z2: 4C each, gate order i, f, g, o)::

    c1 = sigmoid(f1) * c1_prev + sigmoid(i1) * tanh(g1)      (same for c2)
    o_partial = o1 + o2

Each returns the two memories, the (B, 2C) tensor ``[c; m]`` that feeds the next
convolutions, and ``o_partial``. The fused versions write the memories straight into that
buffer and return views of it; the references concatenate, as the public code does.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _ext
from . import _cuda, _triton
from ._common import autograd_pair, grad_or_zeros, new_planes, planar

FORGET_BIAS = 1.0  # ST-LSTM's default forget bias (thuml's _forget_bias)


# ----------------------------------------------------------------------------- references
def stlstm_gates_ref(zx: Tensor, zh: Tensor, zm: Tensor, c_prev: Tensor, m_prev: Tensor,
                     return_deltas: bool = False, forget_bias: float = FORGET_BIAS):
    """Returns ``(c, m, cm, o_partial, deltas)``; deltas is ``(i*g, i'*g')`` or None."""
    C = c_prev.shape[1]
    i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = torch.split(zx, C, dim=1)
    i_h, f_h, g_h, o_h = torch.split(zh, C, dim=1)
    i_m, f_m, g_m = torch.split(zm, C, dim=1)
    i = torch.sigmoid(i_x + i_h)
    f = torch.sigmoid(f_x + f_h + forget_bias)
    g = torch.tanh(g_x + g_h)
    c = f * c_prev + i * g
    i_p = torch.sigmoid(i_xp + i_m)
    f_p = torch.sigmoid(f_xp + f_m + forget_bias)
    g_p = torch.tanh(g_xp + g_m)
    m = f_p * m_prev + i_p * g_p
    cm = torch.cat((c, m), dim=1)
    deltas = (i * g, i_p * g_p) if return_deltas else None
    return c, m, cm, o_x + o_h, deltas


def mklstm_gates_ref(z1: Tensor, z2: Tensor, c1_prev: Tensor, c2_prev: Tensor):
    """Returns ``(c1, c2, cc, o_partial)``. z1 is (B, 4C) in gate order i, f, g, o; so is
    z2, or (B, 3C) without its o block (then ``o_partial = o1``; the C++ kernel takes this
    too, for ST-LSTM's summed convolutions)."""
    C = c1_prev.shape[1]
    i1, f1, g1, o1 = torch.split(z1, C, dim=1)
    i2, f2, g2, *o2 = torch.split(z2, C, dim=1)
    c1 = torch.sigmoid(f1) * c1_prev + torch.sigmoid(i1) * torch.tanh(g1)
    c2 = torch.sigmoid(f2) * c2_prev + torch.sigmoid(i2) * torch.tanh(g2)
    return c1, c2, torch.cat((c1, c2), dim=1), (o1 + o2[0] if o2 else o1)


# ----------------------------------------------------------------------------- ST-LSTM, C++
def _stlstm_impl(zx: Tensor, zh: Tensor, zm: Tensor, c_prev: Tensor, m_prev: Tensor,
                 return_deltas: bool,
                 forget_bias: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    cm, o_partial, acts, deltas = _ext.cpp_extension().stlstm_gates_forward(
        planar(zx), planar(zh), planar(zm), planar(c_prev), planar(m_prev), return_deltas,
        forget_bias)
    return cm, o_partial, acts, deltas if deltas is not None else zx.new_empty(0)


_stlstm_op = torch.library.custom_op("fastcells::stlstm_gates", mutates_args=(),
                                     device_types="cpu")(_stlstm_impl)


@_stlstm_op.register_fake
def _(zx, zh, zm, c_prev, m_prev, return_deltas, forget_bias):
    C = c_prev.shape[1]
    deltas = new_planes(c_prev, 2 * C) if return_deltas else zx.new_empty(0)
    return new_planes(c_prev, 2 * C), new_planes(c_prev, C), new_planes(c_prev, 6 * C), deltas


def _stlstm_backward_impl(grad_cm: Tensor, grad_o_partial: Tensor,
                          grad_deltas: Optional[Tensor], acts: Tensor, c_prev: Tensor,
                          m_prev: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    out = _ext.cpp_extension().stlstm_gates_backward(
        planar(grad_cm), planar(grad_o_partial),
        planar(grad_deltas) if grad_deltas is not None else None,
        acts, planar(c_prev), planar(m_prev))
    return tuple(out)


_stlstm_backward_op = torch.library.custom_op("fastcells::stlstm_gates_backward",
                                              mutates_args=(),
                                              device_types="cpu")(_stlstm_backward_impl)


@_stlstm_backward_op.register_fake
def _(grad_cm, grad_o_partial, grad_deltas, acts, c_prev, m_prev):
    C = c_prev.shape[1]
    return (new_planes(c_prev, 7 * C), new_planes(c_prev, 4 * C), new_planes(c_prev, 3 * C),
            new_planes(c_prev, C), new_planes(c_prev, C))


def _stlstm_setup(ctx, inputs, output):
    *_, c_prev, m_prev, return_deltas, _ = inputs
    _, _, acts, _ = output
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)  # no zero-filled grads for unused outputs
    ctx.save_for_backward(acts, c_prev, m_prev)
    ctx.return_deltas = return_deltas


def _stlstm_backward(ctx, grad_cm, grad_o_partial, _grad_acts, grad_deltas, kernel):
    acts, c_prev, m_prev = ctx.saved_tensors
    grad_cm = grad_or_zeros(grad_cm, c_prev, 2 * c_prev.shape[1])
    grad_o_partial = grad_or_zeros(grad_o_partial, c_prev)
    if not ctx.return_deltas:
        grad_deltas = None
    dzx, dzh, dzm, dc, dm = kernel(grad_cm, grad_o_partial, grad_deltas, acts, c_prev, m_prev)
    return dzx, dzh, dzm, dc, dm, None, None


_stlstm_apply = autograd_pair("STLSTMGates", _stlstm_impl, _stlstm_op, _stlstm_backward_impl,
                              _stlstm_backward_op, _stlstm_setup, _stlstm_backward)


def stlstm_gates_cpp(zx: Tensor, zh: Tensor, zm: Tensor, c_prev: Tensor, m_prev: Tensor,
                     return_deltas: bool = False, forget_bias: float = FORGET_BIAS):
    """Fused C++ kernel; same contract as :func:`stlstm_gates_ref`."""
    C = c_prev.shape[1]
    cm, o_partial, _, deltas = _stlstm_apply(zx, zh, zm, c_prev, m_prev, return_deltas,
                                             float(forget_bias))
    c, m = cm[:, :C], cm[:, C:]
    return c, m, cm, o_partial, ((deltas[:, :C], deltas[:, C:]) if return_deltas else None)


# ----------------------------------------------------------------------------- MK-LSTM, C++
def _mklstm_impl(z1: Tensor, z2: Tensor, c1_prev: Tensor,
                 c2_prev: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    cc, o_partial, acts = _ext.cpp_extension().mklstm_gates_forward(
        planar(z1), planar(z2), planar(c1_prev), planar(c2_prev))
    return cc, o_partial, acts


_mklstm_op = torch.library.custom_op("fastcells::mklstm_gates", mutates_args=(),
                                     device_types="cpu")(_mklstm_impl)


@_mklstm_op.register_fake
def _(z1, z2, c1_prev, c2_prev):
    C = c1_prev.shape[1]
    return new_planes(c1_prev, 2 * C), new_planes(c1_prev, C), new_planes(c1_prev, 6 * C)


def _mklstm_backward_impl(grad_cc: Tensor, grad_o_partial: Tensor, acts: Tensor,
                          c1_prev: Tensor, c2_prev: Tensor, z2_rows: int
                          ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    out = _ext.cpp_extension().mklstm_gates_backward(
        planar(grad_cc), planar(grad_o_partial), acts, planar(c1_prev), planar(c2_prev),
        z2_rows)
    return tuple(out)


_mklstm_backward_op = torch.library.custom_op("fastcells::mklstm_gates_backward",
                                              mutates_args=(),
                                              device_types="cpu")(_mklstm_backward_impl)


@_mklstm_backward_op.register_fake
def _(grad_cc, grad_o_partial, acts, c1_prev, c2_prev, z2_rows):
    C = c1_prev.shape[1]
    return (new_planes(c1_prev, 4 * C), new_planes(c1_prev, z2_rows), new_planes(c1_prev, C),
            new_planes(c1_prev, C))


def _mklstm_setup(ctx, inputs, output):
    _, z2, c1_prev, c2_prev = inputs
    _, _, acts = output
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)  # no zero-filled grads for unused outputs
    ctx.save_for_backward(acts, c1_prev, c2_prev)
    ctx.z2_rows = z2.shape[1]


def _mklstm_backward(ctx, grad_cc, grad_o_partial, _grad_acts, kernel, *rows):
    acts, c1_prev, c2_prev = ctx.saved_tensors
    grad_cc = grad_or_zeros(grad_cc, c1_prev, 2 * c1_prev.shape[1])
    grad_o_partial = grad_or_zeros(grad_o_partial, c1_prev)
    return tuple(kernel(grad_cc, grad_o_partial, acts, c1_prev, c2_prev, *rows))


def _mklstm_backward_cpp(ctx, grad_cc, grad_o_partial, grad_acts, kernel):
    # the C++ kernel also takes a z2 without its o block: it is told z2's rows
    return _mklstm_backward(ctx, grad_cc, grad_o_partial, grad_acts, kernel, ctx.z2_rows)


_mklstm_apply = autograd_pair("MKLSTMGates", _mklstm_impl, _mklstm_op, _mklstm_backward_impl,
                              _mklstm_backward_op, _mklstm_setup, _mklstm_backward_cpp)


def mklstm_gates_cpp(z1: Tensor, z2: Tensor, c1_prev: Tensor, c2_prev: Tensor):
    """Fused C++ kernel; same contract as :func:`mklstm_gates_ref`."""
    C = c1_prev.shape[1]
    cc, o_partial, _ = _mklstm_apply(z1, z2, c1_prev, c2_prev)
    return cc[:, :C], cc[:, C:], cc, o_partial


# ----------------------------------------------------------------------------- Triton
_stlstm_triton_apply = autograd_pair(
    "STLSTMGatesTriton",
    _triton.eager("dual_memory_gates", "stlstm_forward"),
    _triton.library_op("stlstm_gates_triton",
                       "(Tensor zx, Tensor zh, Tensor zm, Tensor c_prev, Tensor m_prev, "
                       "bool return_deltas, float forget_bias) "
                       "-> (Tensor, Tensor, Tensor, Tensor)",
                       "dual_memory_gates", "stlstm_forward"),
    _triton.eager("dual_memory_gates", "stlstm_backward"),
    _triton.library_op("stlstm_gates_triton_backward",
                       "(Tensor grad_cm, Tensor grad_o_partial, Tensor? grad_deltas, "
                       "Tensor acts, Tensor c_prev, Tensor m_prev) "
                       "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
                       "dual_memory_gates", "stlstm_backward"),
    _stlstm_setup, _stlstm_backward)


def stlstm_gates_triton(zx: Tensor, zh: Tensor, zm: Tensor, c_prev: Tensor, m_prev: Tensor,
                        return_deltas: bool = False, forget_bias: float = FORGET_BIAS):
    """Fused Triton kernels; same contract as :func:`stlstm_gates_ref`."""
    C = c_prev.shape[1]
    cm, o_partial, _, deltas = _stlstm_triton_apply(zx, zh, zm, c_prev, m_prev, return_deltas,
                                                    float(forget_bias))
    c, m = cm[:, :C], cm[:, C:]
    return c, m, cm, o_partial, ((deltas[:, :C], deltas[:, C:]) if return_deltas else None)


_mklstm_triton_apply = autograd_pair(
    "MKLSTMGatesTriton",
    _triton.eager("dual_memory_gates", "mklstm_forward"),
    _triton.library_op("mklstm_gates_triton",
                       "(Tensor z1, Tensor z2, Tensor c1_prev, Tensor c2_prev) "
                       "-> (Tensor, Tensor, Tensor)",
                       "dual_memory_gates", "mklstm_forward"),
    _triton.eager("dual_memory_gates", "mklstm_backward"),
    _triton.library_op("mklstm_gates_triton_backward",
                       "(Tensor grad_cc, Tensor grad_o_partial, Tensor acts, Tensor c1_prev, "
                       "Tensor c2_prev) -> (Tensor, Tensor, Tensor, Tensor)",
                       "dual_memory_gates", "mklstm_backward"),
    _mklstm_setup, _mklstm_backward)


def mklstm_gates_triton(z1: Tensor, z2: Tensor, c1_prev: Tensor, c2_prev: Tensor):
    """Fused Triton kernels; same contract as :func:`mklstm_gates_ref`."""
    C = c1_prev.shape[1]
    cc, o_partial, _ = _mklstm_triton_apply(z1, z2, c1_prev, c2_prev)
    return cc[:, :C], cc[:, C:], cc, o_partial


# ----------------------------------------------------------------------------- CUDA C++
# The kernels of csrc/cuda/ with the autograd formulas above (_stlstm_setup/_stlstm_backward,
# _mklstm_setup/_mklstm_backward).


def _stlstm_cuda_impl(zx: Tensor, zh: Tensor, zm: Tensor, c_prev: Tensor, m_prev: Tensor,
                      return_deltas: bool,
                      forget_bias: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    cm, o_partial, acts, deltas = _cuda.extension().stlstm_gates_forward(
        _cuda.strided(zx), _cuda.strided(zh), _cuda.strided(zm), _cuda.strided(c_prev),
        _cuda.strided(m_prev), return_deltas, forget_bias, _cuda.channels_last(zx))
    return cm, o_partial, acts, deltas if deltas is not None else zx.new_empty(0)


_stlstm_cuda_op = torch.library.custom_op("fastcells::stlstm_gates_cuda", mutates_args=(),
                                          device_types="cuda")(_stlstm_cuda_impl)


@_stlstm_cuda_op.register_fake
def _(zx, zh, zm, c_prev, m_prev, return_deltas, forget_bias):
    C, cl = c_prev.shape[1], _cuda.channels_last(zx)
    deltas = _cuda.new_output(c_prev, 2 * C, cl) if return_deltas else zx.new_empty(0)
    return (_cuda.new_output(c_prev, 2 * C, cl), _cuda.new_output(c_prev, C, cl),
            _cuda.new_output(c_prev, 6 * C, cl), deltas)


def _stlstm_cuda_backward_impl(grad_cm: Tensor, grad_o_partial: Tensor,
                               grad_deltas: Tensor | None, acts: Tensor, c_prev: Tensor,
                               m_prev: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    out = _cuda.extension().stlstm_gates_backward(
        _cuda.strided(grad_cm), _cuda.strided(grad_o_partial), _cuda.optional(grad_deltas),
        _cuda.strided(acts), _cuda.strided(c_prev), _cuda.strided(m_prev),
        _cuda.channels_last(acts))
    return tuple(out)


_stlstm_cuda_backward_op = torch.library.custom_op(
    "fastcells::stlstm_gates_cuda_backward", mutates_args=(),
    device_types="cuda")(_stlstm_cuda_backward_impl)


@_stlstm_cuda_backward_op.register_fake
def _(grad_cm, grad_o_partial, grad_deltas, acts, c_prev, m_prev):
    C, cl = c_prev.shape[1], _cuda.channels_last(acts)
    return tuple(_cuda.new_output(c_prev, k * C, cl) for k in (7, 4, 3, 1, 1))


_stlstm_cuda_apply = autograd_pair("STLSTMGatesCUDA", _stlstm_cuda_impl, _stlstm_cuda_op,
                                   _stlstm_cuda_backward_impl, _stlstm_cuda_backward_op,
                                   _stlstm_setup, _stlstm_backward)


def stlstm_gates_cuda(zx: Tensor, zh: Tensor, zm: Tensor, c_prev: Tensor, m_prev: Tensor,
                      return_deltas: bool = False, forget_bias: float = FORGET_BIAS):
    """Fused CUDA C++ kernel; same contract as :func:`stlstm_gates_ref`."""
    C = c_prev.shape[1]
    cm, o_partial, _, deltas = _stlstm_cuda_apply(zx, zh, zm, c_prev, m_prev, return_deltas,
                                                  float(forget_bias))
    c, m = cm[:, :C], cm[:, C:]
    return c, m, cm, o_partial, ((deltas[:, :C], deltas[:, C:]) if return_deltas else None)


def _mklstm_cuda_impl(z1: Tensor, z2: Tensor, c1_prev: Tensor,
                      c2_prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    cc, o_partial, acts = _cuda.extension().mklstm_gates_forward(
        _cuda.strided(z1), _cuda.strided(z2), _cuda.strided(c1_prev), _cuda.strided(c2_prev),
        _cuda.channels_last(z1))
    return cc, o_partial, acts


_mklstm_cuda_op = torch.library.custom_op("fastcells::mklstm_gates_cuda", mutates_args=(),
                                          device_types="cuda")(_mklstm_cuda_impl)


@_mklstm_cuda_op.register_fake
def _(z1, z2, c1_prev, c2_prev):
    C, cl = c1_prev.shape[1], _cuda.channels_last(z1)
    return (_cuda.new_output(c1_prev, 2 * C, cl), _cuda.new_output(c1_prev, C, cl),
            _cuda.new_output(c1_prev, 6 * C, cl))


def _mklstm_cuda_backward_impl(grad_cc: Tensor, grad_o_partial: Tensor, acts: Tensor,
                               c1_prev: Tensor, c2_prev: Tensor
                               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    out = _cuda.extension().mklstm_gates_backward(
        _cuda.strided(grad_cc), _cuda.strided(grad_o_partial), _cuda.strided(acts),
        _cuda.strided(c1_prev), _cuda.strided(c2_prev), _cuda.channels_last(acts))
    return tuple(out)


_mklstm_cuda_backward_op = torch.library.custom_op(
    "fastcells::mklstm_gates_cuda_backward", mutates_args=(),
    device_types="cuda")(_mklstm_cuda_backward_impl)


@_mklstm_cuda_backward_op.register_fake
def _(grad_cc, grad_o_partial, acts, c1_prev, c2_prev):
    C, cl = c1_prev.shape[1], _cuda.channels_last(acts)
    return tuple(_cuda.new_output(c1_prev, k * C, cl) for k in (4, 4, 1, 1))


_mklstm_cuda_apply = autograd_pair("MKLSTMGatesCUDA", _mklstm_cuda_impl, _mklstm_cuda_op,
                                   _mklstm_cuda_backward_impl, _mklstm_cuda_backward_op,
                                   _mklstm_setup, _mklstm_backward)


def mklstm_gates_cuda(z1: Tensor, z2: Tensor, c1_prev: Tensor, c2_prev: Tensor):
    """Fused CUDA C++ kernel; same contract as :func:`mklstm_gates_ref`."""
    C = c1_prev.shape[1]
    cc, o_partial, _ = _mklstm_cuda_apply(z1, z2, c1_prev, c2_prev)
    return cc[:, :C], cc[:, C:], cc, o_partial
