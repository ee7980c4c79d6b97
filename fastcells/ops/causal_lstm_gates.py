"""Gate math of PredRNN++'s causal LSTM (CELLS.md section 6, OpenSTL ``CausalLSTMCell``).

A step has two convolutions inside it (``conv_c2m`` reads c_t, ``conv_om`` reads m_t), so
its gate math is three ops with those convolutions between them.

Stage 1, :func:`causal_c_gates_ref` (zx: 7C in order i, f, g, i', f', g', o; zh: 4C i, f, g,
o; zc: 3C i, f, g; zm: 3C i', f', m_m)::

    c = sigmoid(f_x + f_h + f_c + fb) * c_prev + sigmoid(i_x + i_h + i_c) * tanh(g_x + g_h + g_c)
    o_partial = o_x + o_h
    zp = [i'_x + i_m; f'_x + f_m; g'_x; m_m]            (4C)

Stage 2, :func:`causal_m_gates_ref` (zc2m = conv_c2m(c): 4C in OpenSTL's order i', g', f', o)::

    m = sigmoid(zp_f + f'_c + fb) * tanh(m_m) + sigmoid(zp_i + i'_c) * tanh(zp_g + g'_c)
    cm = [c; m]                     (what conv_last reads)
    o_sum = o_partial + o_c

Stage 3, :func:`causal_output_gate_ref` (zo = conv_om(m), zl = conv_last(cm))::

    h = tanh(o_sum + zo) * tanh(zl)                     (tanh, not sigmoid)

``fb`` is the forget bias (OpenSTL: 1.0; MS-RNN's ``PredRNN_Plus2_Cell``: none).
zx and zm feed both memory updates; stage 1 hands their stage-2 terms on as the partial
sums ``zp``, so every tensor is the input of one op and each backward kernel writes every
gradient once (no zero-filled halves for autograd to add up). The fused stage 2 writes c
and m into one (B, 2C) buffer and returns m as a view of it, so conv_last reads ``[c; m]``
without a concatenation; the references concatenate, as the public code does. Sums are
formed in OpenSTL's order, so float64 agrees to rounding.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext
from . import _cuda, _triton
from ._common import autograd_pair, grad_or_zeros, new_planes, planar

FORGET_BIAS = 1.0  # OpenSTL's _forget_bias


# ----------------------------------------------------------------------------- references
def causal_c_gates_ref(zx: Tensor, zh: Tensor, zc: Tensor, zm: Tensor, c_prev: Tensor,
                       forget_bias: float = FORGET_BIAS):
    """Stage 1. Returns ``(c, o_partial, zp)``."""
    C = c_prev.shape[1]
    i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = torch.split(zx, C, dim=1)
    i_h, f_h, g_h, o_h = torch.split(zh, C, dim=1)
    i_c, f_c, g_c = torch.split(zc, C, dim=1)
    i_m, f_m, m_m = torch.split(zm, C, dim=1)
    i = torch.sigmoid(i_x + i_h + i_c)
    f = torch.sigmoid(f_x + f_h + f_c + forget_bias)
    g = torch.tanh(g_x + g_h + g_c)
    c = f * c_prev + i * g
    zp = torch.cat((i_xp + i_m, f_xp + f_m, g_xp, m_m), dim=1)
    return c, o_x + o_h, zp


def causal_m_gates_ref(zp: Tensor, zc2m: Tensor, c: Tensor, o_partial: Tensor,
                       forget_bias: float = FORGET_BIAS):
    """Stage 2. Returns ``(m, cm, o_sum)``."""
    C = c.shape[1]
    p_i, p_f, p_g, m_m = torch.split(zp, C, dim=1)
    i_c, g_c, f_c, o_c = torch.split(zc2m, C, dim=1)
    i = torch.sigmoid(p_i + i_c)
    f = torch.sigmoid(p_f + f_c + forget_bias)
    g = torch.tanh(p_g + g_c)
    m = f * torch.tanh(m_m) + i * g
    return m, torch.cat((c, m), dim=1), o_partial + o_c


def causal_output_gate_ref(o_sum: Tensor, zo: Tensor, zl: Tensor) -> Tensor:
    """Stage 3: ``tanh(o_sum + zo) * tanh(zl)``."""
    return torch.tanh(o_sum + zo) * torch.tanh(zl)


# ----------------------------------------------------------------------------- autograd
# One formula per stage, shared by the C++, Triton and CUDA ops (each passes its backward).
def _c_setup(ctx, inputs, output):
    *_, c_prev, _ = inputs
    _, _, _, acts = output
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)  # no zero-filled grads for unused outputs
    ctx.save_for_backward(acts, c_prev)


def _c_backward(ctx, grad_c, grad_o_partial, grad_zp, _grad_acts, kernel):
    acts, c_prev = ctx.saved_tensors
    grad_c = grad_or_zeros(grad_c, c_prev)
    grad_o_partial = grad_or_zeros(grad_o_partial, c_prev)
    grad_zp = grad_or_zeros(grad_zp, c_prev, 4 * c_prev.shape[1])
    dzx, dzh, dzc, dzm, dc = kernel(grad_c, grad_o_partial, grad_zp, acts, c_prev)
    return dzx, dzh, dzc, dzm, dc, None


def _m_setup(ctx, inputs, output):
    _, _, acts = output
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(acts)


def _m_backward(ctx, grad_cm, grad_o_sum, _grad_acts, kernel):
    (acts,) = ctx.saved_tensors
    C = acts.shape[1] // 4
    grad_cm = grad_or_zeros(grad_cm, acts, 2 * C)
    grad_o_sum = grad_or_zeros(grad_o_sum, acts, C)
    dzp, dzc2m = kernel(grad_cm[:, C:], grad_o_sum, acts)
    # cm's first half is a copy of c, and o_sum = o_partial + o_c: their gradients pass on
    # unchanged (views, no kernel).
    return dzp, dzc2m, grad_cm[:, :C], grad_o_sum, None


def _out_setup(ctx, inputs, output):
    _, acts = output
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(acts)


def _out_backward(ctx, grad_h, _grad_acts, kernel):
    (acts,) = ctx.saved_tensors
    d_o, d_l = kernel(grad_or_zeros(grad_h, acts, acts.shape[1] // 2), acts)
    return d_o, d_o, d_l


def _causal_c(apply, zx, zh, zc, zm, c_prev, forget_bias):
    c, o_partial, zp, _ = apply(zx, zh, zc, zm, c_prev, float(forget_bias))
    return c, o_partial, zp


def _causal_m(apply, zp, zc2m, c, o_partial, forget_bias):
    C = c.shape[1]
    cm, o_sum, _ = apply(zp, zc2m, c, o_partial, float(forget_bias))
    return cm[:, C:], cm, o_sum


# ----------------------------------------------------------------------------- C++
def _cpp(name):
    return getattr(_ext.cpp_extension(), name)


def _c_impl(zx: Tensor, zh: Tensor, zc: Tensor, zm: Tensor, c_prev: Tensor,
            forget_bias: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    c, o_partial, zp, acts = _cpp("causal_c_gates_forward")(
        planar(zx), planar(zh), planar(zc), planar(zm), planar(c_prev), forget_bias)
    return c, o_partial, zp, acts


_c_op = torch.library.custom_op("fastcells::causal_c_gates", mutates_args=(),
                                device_types="cpu")(_c_impl)


@_c_op.register_fake
def _(zx, zh, zc, zm, c_prev, forget_bias):
    C = c_prev.shape[1]
    return tuple(new_planes(c_prev, k * C) for k in (1, 1, 4, 3))


def _c_backward_impl(grad_c: Tensor, grad_o_partial: Tensor, grad_zp: Tensor, acts: Tensor,
                     c_prev: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return tuple(_cpp("causal_c_gates_backward")(
        planar(grad_c), planar(grad_o_partial), planar(grad_zp), acts, planar(c_prev)))


_c_backward_op = torch.library.custom_op("fastcells::causal_c_gates_backward", mutates_args=(),
                                         device_types="cpu")(_c_backward_impl)


@_c_backward_op.register_fake
def _(grad_c, grad_o_partial, grad_zp, acts, c_prev):
    C = c_prev.shape[1]
    return tuple(new_planes(c_prev, k * C) for k in (7, 4, 3, 3, 1))


_c_apply = autograd_pair("CausalCGates", _c_impl, _c_op, _c_backward_impl, _c_backward_op,
                         _c_setup, _c_backward)


def _m_impl(zp: Tensor, zc2m: Tensor, c: Tensor, o_partial: Tensor,
            forget_bias: float) -> tuple[Tensor, Tensor, Tensor]:
    cm, o_sum, acts = _cpp("causal_m_gates_forward")(
        planar(zp), planar(zc2m), planar(c), planar(o_partial), forget_bias)
    return cm, o_sum, acts


_m_op = torch.library.custom_op("fastcells::causal_m_gates", mutates_args=(),
                                device_types="cpu")(_m_impl)


@_m_op.register_fake
def _(zp, zc2m, c, o_partial, forget_bias):
    C = c.shape[1]
    return tuple(new_planes(c, k * C) for k in (2, 1, 4))


def _m_backward_impl(grad_m: Tensor, grad_o_sum: Tensor,
                     acts: Tensor) -> tuple[Tensor, Tensor]:
    dzp, dzc2m = _cpp("causal_m_gates_backward")(planar(grad_m), planar(grad_o_sum), acts)
    return dzp, dzc2m


_m_backward_op = torch.library.custom_op("fastcells::causal_m_gates_backward", mutates_args=(),
                                         device_types="cpu")(_m_backward_impl)


@_m_backward_op.register_fake
def _(grad_m, grad_o_sum, acts):
    C = grad_m.shape[1]
    return new_planes(grad_m, 4 * C), new_planes(grad_m, 4 * C)


_m_apply = autograd_pair("CausalMGates", _m_impl, _m_op, _m_backward_impl, _m_backward_op,
                         _m_setup, _m_backward)


def _out_impl(o_sum: Tensor, zo: Tensor, zl: Tensor) -> tuple[Tensor, Tensor]:
    h, acts = _cpp("causal_output_gate_forward")(planar(o_sum), planar(zo), planar(zl))
    return h, acts


_out_op = torch.library.custom_op("fastcells::causal_output_gate", mutates_args=(),
                                  device_types="cpu")(_out_impl)


@_out_op.register_fake
def _(o_sum, zo, zl):
    return new_planes(zl, zl.shape[1]), new_planes(zl, 2 * zl.shape[1])


def _out_backward_impl(grad_h: Tensor, acts: Tensor) -> tuple[Tensor, Tensor]:
    d_o, d_l = _cpp("causal_output_gate_backward")(planar(grad_h), acts)
    return d_o, d_l


_out_backward_op = torch.library.custom_op("fastcells::causal_output_gate_backward",
                                           mutates_args=(),
                                           device_types="cpu")(_out_backward_impl)


@_out_backward_op.register_fake
def _(grad_h, acts):
    return new_planes(grad_h, grad_h.shape[1]), new_planes(grad_h, grad_h.shape[1])


_out_apply = autograd_pair("CausalOutputGate", _out_impl, _out_op, _out_backward_impl,
                           _out_backward_op, _out_setup, _out_backward)


def causal_c_gates_cpp(zx, zh, zc, zm, c_prev, forget_bias: float = FORGET_BIAS):
    """Fused C++ kernel; same contract as :func:`causal_c_gates_ref`."""
    return _causal_c(_c_apply, zx, zh, zc, zm, c_prev, forget_bias)


def causal_m_gates_cpp(zp, zc2m, c, o_partial, forget_bias: float = FORGET_BIAS):
    """Fused C++ kernel; same contract as :func:`causal_m_gates_ref` (m is a view of cm)."""
    return _causal_m(_m_apply, zp, zc2m, c, o_partial, forget_bias)


def causal_output_gate_cpp(o_sum: Tensor, zo: Tensor, zl: Tensor) -> Tensor:
    """Fused C++ kernel; same contract as :func:`causal_output_gate_ref`."""
    return _out_apply(o_sum, zo, zl)[0]


# ----------------------------------------------------------------------------- Triton
_MODULE = "causal_lstm_gates"

_c_triton_apply = autograd_pair(
    "CausalCGatesTriton",
    _triton.eager(_MODULE, "c_forward"),
    _triton.library_op("causal_c_gates_triton",
                       "(Tensor zx, Tensor zh, Tensor zc, Tensor zm, Tensor c_prev, "
                       "float forget_bias) -> (Tensor, Tensor, Tensor, Tensor)",
                       _MODULE, "c_forward"),
    _triton.eager(_MODULE, "c_backward"),
    _triton.library_op("causal_c_gates_triton_backward",
                       "(Tensor grad_c, Tensor grad_o_partial, Tensor grad_zp, Tensor acts, "
                       "Tensor c_prev) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
                       _MODULE, "c_backward"),
    _c_setup, _c_backward)

_m_triton_apply = autograd_pair(
    "CausalMGatesTriton",
    _triton.eager(_MODULE, "m_forward"),
    _triton.library_op("causal_m_gates_triton",
                       "(Tensor zp, Tensor zc2m, Tensor c, Tensor o_partial, float forget_bias) "
                       "-> (Tensor, Tensor, Tensor)", _MODULE, "m_forward"),
    _triton.eager(_MODULE, "m_backward"),
    _triton.library_op("causal_m_gates_triton_backward",
                       "(Tensor grad_m, Tensor grad_o_sum, Tensor acts) -> (Tensor, Tensor)",
                       _MODULE, "m_backward"),
    _m_setup, _m_backward)

_out_triton_apply = autograd_pair(
    "CausalOutputGateTriton",
    _triton.eager(_MODULE, "output_forward"),
    _triton.library_op("causal_output_gate_triton",
                       "(Tensor o_sum, Tensor zo, Tensor zl) -> (Tensor, Tensor)",
                       _MODULE, "output_forward"),
    _triton.eager(_MODULE, "output_backward"),
    _triton.library_op("causal_output_gate_triton_backward",
                       "(Tensor grad_h, Tensor acts) -> (Tensor, Tensor)",
                       _MODULE, "output_backward"),
    _out_setup, _out_backward)


def causal_c_gates_triton(zx, zh, zc, zm, c_prev, forget_bias: float = FORGET_BIAS):
    """Fused Triton kernels; same contract as :func:`causal_c_gates_ref`."""
    return _causal_c(_c_triton_apply, zx, zh, zc, zm, c_prev, forget_bias)


def causal_m_gates_triton(zp, zc2m, c, o_partial, forget_bias: float = FORGET_BIAS):
    """Fused Triton kernels; same contract as :func:`causal_m_gates_ref`."""
    return _causal_m(_m_triton_apply, zp, zc2m, c, o_partial, forget_bias)


def causal_output_gate_triton(o_sum: Tensor, zo: Tensor, zl: Tensor) -> Tensor:
    """Fused Triton kernels; same contract as :func:`causal_output_gate_ref`."""
    return _out_triton_apply(o_sum, zo, zl)[0]


# ----------------------------------------------------------------------------- CUDA C++
# The kernels of csrc/cuda/causal_lstm.cuh with the autograd formulas above.
def _cu(name):
    return getattr(_cuda.extension(), name)


def _c_cuda_impl(zx: Tensor, zh: Tensor, zc: Tensor, zm: Tensor, c_prev: Tensor,
                 forget_bias: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    s = _cuda.strided
    c, o_partial, zp, acts = _cu("causal_c_gates_forward")(
        s(zx), s(zh), s(zc), s(zm), s(c_prev), forget_bias, _cuda.channels_last(zx))
    return c, o_partial, zp, acts


_c_cuda_op = torch.library.custom_op("fastcells::causal_c_gates_cuda", mutates_args=(),
                                     device_types="cuda")(_c_cuda_impl)


@_c_cuda_op.register_fake
def _(zx, zh, zc, zm, c_prev, forget_bias):
    C, cl = c_prev.shape[1], _cuda.channels_last(zx)
    return tuple(_cuda.new_output(c_prev, k * C, cl) for k in (1, 1, 4, 3))


def _c_cuda_backward_impl(grad_c: Tensor, grad_o_partial: Tensor, grad_zp: Tensor, acts: Tensor,
                          c_prev: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    s = _cuda.strided
    return tuple(_cu("causal_c_gates_backward")(
        s(grad_c), s(grad_o_partial), s(grad_zp), s(acts), s(c_prev),
        _cuda.channels_last(acts)))


_c_cuda_backward_op = torch.library.custom_op(
    "fastcells::causal_c_gates_cuda_backward", mutates_args=(),
    device_types="cuda")(_c_cuda_backward_impl)


@_c_cuda_backward_op.register_fake
def _(grad_c, grad_o_partial, grad_zp, acts, c_prev):
    C, cl = c_prev.shape[1], _cuda.channels_last(acts)
    return tuple(_cuda.new_output(c_prev, k * C, cl) for k in (7, 4, 3, 3, 1))


_c_cuda_apply = autograd_pair("CausalCGatesCUDA", _c_cuda_impl, _c_cuda_op,
                              _c_cuda_backward_impl, _c_cuda_backward_op, _c_setup, _c_backward)


def _m_cuda_impl(zp: Tensor, zc2m: Tensor, c: Tensor, o_partial: Tensor,
                 forget_bias: float) -> tuple[Tensor, Tensor, Tensor]:
    s = _cuda.strided
    cm, o_sum, acts = _cu("causal_m_gates_forward")(
        s(zp), s(zc2m), s(c), s(o_partial), forget_bias, _cuda.channels_last(zp))
    return cm, o_sum, acts


_m_cuda_op = torch.library.custom_op("fastcells::causal_m_gates_cuda", mutates_args=(),
                                     device_types="cuda")(_m_cuda_impl)


@_m_cuda_op.register_fake
def _(zp, zc2m, c, o_partial, forget_bias):
    C, cl = c.shape[1], _cuda.channels_last(zp)
    return tuple(_cuda.new_output(c, k * C, cl) for k in (2, 1, 4))


def _m_cuda_backward_impl(grad_m: Tensor, grad_o_sum: Tensor,
                          acts: Tensor) -> tuple[Tensor, Tensor]:
    s = _cuda.strided
    dzp, dzc2m = _cu("causal_m_gates_backward")(s(grad_m), s(grad_o_sum), s(acts),
                                                 _cuda.channels_last(acts))
    return dzp, dzc2m


_m_cuda_backward_op = torch.library.custom_op(
    "fastcells::causal_m_gates_cuda_backward", mutates_args=(),
    device_types="cuda")(_m_cuda_backward_impl)


@_m_cuda_backward_op.register_fake
def _(grad_m, grad_o_sum, acts):
    C, cl = grad_m.shape[1], _cuda.channels_last(acts)
    return _cuda.new_output(grad_m, 4 * C, cl), _cuda.new_output(grad_m, 4 * C, cl)


_m_cuda_apply = autograd_pair("CausalMGatesCUDA", _m_cuda_impl, _m_cuda_op,
                              _m_cuda_backward_impl, _m_cuda_backward_op, _m_setup, _m_backward)


def _out_cuda_impl(o_sum: Tensor, zo: Tensor, zl: Tensor) -> tuple[Tensor, Tensor]:
    s = _cuda.strided
    h, acts = _cu("causal_output_gate_forward")(s(o_sum), s(zo), s(zl), _cuda.channels_last(zl))
    return h, acts


_out_cuda_op = torch.library.custom_op("fastcells::causal_output_gate_cuda", mutates_args=(),
                                       device_types="cuda")(_out_cuda_impl)


@_out_cuda_op.register_fake
def _(o_sum, zo, zl):
    C, cl = zl.shape[1], _cuda.channels_last(zl)
    return _cuda.new_output(zl, C, cl), _cuda.new_output(zl, 2 * C, cl)


def _out_cuda_backward_impl(grad_h: Tensor, acts: Tensor) -> tuple[Tensor, Tensor]:
    d_o, d_l = _cu("causal_output_gate_backward")(_cuda.strided(grad_h), _cuda.strided(acts),
                                                  _cuda.channels_last(acts))
    return d_o, d_l


_out_cuda_backward_op = torch.library.custom_op(
    "fastcells::causal_output_gate_cuda_backward", mutates_args=(),
    device_types="cuda")(_out_cuda_backward_impl)


@_out_cuda_backward_op.register_fake
def _(grad_h, acts):
    C, cl = grad_h.shape[1], _cuda.channels_last(acts)
    return _cuda.new_output(grad_h, C, cl), _cuda.new_output(grad_h, C, cl)


_out_cuda_apply = autograd_pair("CausalOutputGateCUDA", _out_cuda_impl, _out_cuda_op,
                                _out_cuda_backward_impl, _out_cuda_backward_op, _out_setup,
                                _out_backward)


def causal_c_gates_cuda(zx, zh, zc, zm, c_prev, forget_bias: float = FORGET_BIAS):
    """Fused CUDA C++ kernel; same contract as :func:`causal_c_gates_ref`."""
    return _causal_c(_c_cuda_apply, zx, zh, zc, zm, c_prev, forget_bias)


def causal_m_gates_cuda(zp, zc2m, c, o_partial, forget_bias: float = FORGET_BIAS):
    """Fused CUDA C++ kernel; same contract as :func:`causal_m_gates_ref`."""
    return _causal_m(_m_cuda_apply, zp, zc2m, c, o_partial, forget_bias)


def causal_output_gate_cuda(o_sum: Tensor, zo: Tensor, zl: Tensor) -> Tensor:
    """Fused CUDA C++ kernel; same contract as :func:`causal_output_gate_ref`."""
    return _out_cuda_apply(o_sum, zo, zl)[0]
