"""Gate math of MIM, memory in memory (CELLS.md section 7, OpenSTL ``mim_modules.py``).

Stationarity module (OpenSTL's ``MIMN``, and the ``MIMS`` method of ``MIMBlock``): a ConvLSTM
with per-pixel peepholes and forget bias 1. ``zh`` and ``zx`` are (B, 4C) in gate order
i, g, f, o (``zx`` None: no input terms, as OpenSTL's ``x == None``); ``ct_weight`` is
(2C, H, W) holding ``[ct_i; ct_f]``, ``oc_weight`` (C, H, W)::

    i = sigmoid(i_h + i_x + ct_i * c_prev)      f = sigmoid(f_h + f_x + ct_f * c_prev + 1)
    c = f * c_prev + i * tanh(g_h + g_x)       h = sigmoid(o_h + o_x + oc * c) * tanh(c)

Block gates (``MIMBlock``): ``zx`` (4C: i, g, f, o), ``zt`` (3C: i, g, o), ``zs`` (4C: i, g,
f, o), ``m_prev``, and ``n_h``, the stationarity module's hidden output::

    m = sigmoid(f_x + f_s + 1) * m_prev + sigmoid(i_x + i_s) * tanh(g_x + g_s)
    c = n_h + sigmoid(i_x + i_t) * tanh(g_x + g_t)
    o_partial = o_x + o_t

returning ``(c, m, cm, o_partial)`` where ``cm = [c; m]`` feeds conv_last; the block's
output is then ``output_gate(o_partial, o_s, conv_last(cm))`` = ``sigmoid(o_x + o_t + o_s)
* tanh(conv_last([c; m]))`` (fastcells.ops.output_gate, with o_s the last C channels of zs).
The fused block op reads zs's i, g, f channels; its gradient for o_s is zero (the output
gate's gradient reaches that slice).

The fused stationarity kernels save the activations (i, g, f, o) instead of z and return
the pre-activation gradient (shared by zh and zx) and c_prev's; the per-pixel peephole
gradients are sums over the batch of products with it, formed here in the autograd wrapper
(``_mims_backward``) with two library reductions, which keeps the kernels elementwise.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _ext
from . import _cuda, _triton
from ._common import autograd_pair, grad_or_zeros, new_planes, planar

FORGET_BIAS = 1.0  # OpenSTL's _forget_bias in MIMBlock and MIMN


# ----------------------------------------------------------------------------- references
def mims_gates_ref(zh: Tensor, zx: Optional[Tensor], c_prev: Tensor, ct_weight: Tensor,
                   oc_weight: Tensor) -> Tuple[Tensor, Tensor]:
    """Eager reference, in OpenSTL's order of operations; returns ``(h, c)``."""
    C = c_prev.shape[1]
    i_h, g_h, f_h, o_h = torch.split(zh, C, dim=1)
    i_c, f_c = torch.split(c_prev.repeat(1, 2, 1, 1) * ct_weight, C, dim=1)
    i_, f_, g_, o_ = i_h + i_c, f_h + f_c, g_h, o_h
    if zx is not None:
        i_x, g_x, f_x, o_x = torch.split(zx, C, dim=1)
        i_, f_, g_, o_ = i_ + i_x, f_ + f_x, g_ + g_x, o_ + o_x
    i = torch.sigmoid(i_)
    f = torch.sigmoid(f_ + FORGET_BIAS)
    c = f * c_prev + i * torch.tanh(g_)
    h = torch.sigmoid(o_ + c * oc_weight) * torch.tanh(c)
    return h, c


def mim_block_gates_ref(zx: Tensor, zt: Tensor, zs: Tensor, m_prev: Tensor,
                        n_h: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Eager reference; returns ``(c, m, cm, o_partial)``."""
    C = m_prev.shape[1]
    i_s, g_s, f_s, _ = torch.split(zs, C, dim=1)
    i_t, g_t, o_t = torch.split(zt, C, dim=1)
    i_x, g_x, f_x, o_x = torch.split(zx, C, dim=1)
    i = torch.sigmoid(i_x + i_t)
    i_ = torch.sigmoid(i_x + i_s)
    g = torch.tanh(g_x + g_t)
    g_ = torch.tanh(g_x + g_s)
    f_ = torch.sigmoid(f_x + f_s + FORGET_BIAS)
    m = f_ * m_prev + i_ * g_
    c = n_h + i * g
    return c, m, torch.cat((c, m), dim=1), o_x + o_t


# ----------------------------------------------------------------------------- autograd
def _mims_setup(ctx, inputs, output):
    _, zx, c_prev, ct_weight, oc_weight = inputs
    _, c, acts = output
    # The activations replace zh and zx (freed); c is kept alive by the next step anyway.
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)  # no zero-filled grads for unused outputs
    ctx.save_for_backward(acts, c_prev, c, ct_weight, oc_weight)
    ctx.has_x = zx is not None


def _mims_backward(ctx, grad_h, grad_c, _grad_acts, kernel):
    acts, c_prev, c, ct_weight, oc_weight = ctx.saved_tensors
    dz, dc_prev = kernel(grad_or_zeros(grad_h, c_prev), grad_or_zeros(grad_c, c_prev), acts,
                         c_prev, c, ct_weight, oc_weight)
    C = c_prev.shape[1]
    d_ct = d_oc = None
    # The peepholes are per pixel, shared by the batch: their gradients sum over it.
    if ctx.needs_input_grad[3]:
        d_ct = torch.cat((dz[:, :C] * c_prev, dz[:, 2 * C:3 * C] * c_prev), dim=1).sum(0)
    if ctx.needs_input_grad[4]:
        d_oc = (dz[:, 3 * C:] * c).sum(0)
    return dz, (dz if ctx.has_x else None), dc_prev, d_ct, d_oc


def _block_setup(ctx, inputs, output):
    *_, m_prev, _ = inputs
    _, _, acts = output
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(acts, m_prev)


def _block_backward(ctx, grad_cm, grad_o_partial, _grad_acts, kernel):
    acts, m_prev = ctx.saved_tensors
    C = m_prev.shape[1]
    grad_cm = grad_or_zeros(grad_cm, m_prev, 2 * C)
    dzx, dzt, dzs, dm_prev = kernel(grad_cm, grad_or_zeros(grad_o_partial, m_prev), acts,
                                    m_prev)
    # c = n_h + i * g: n_h's gradient is c's, a view of grad_cm (no kernel output needed)
    return dzx, dzt, dzs, dm_prev, grad_cm[:, :C]


def _mims_out(out):
    h, c, _ = out
    return h, c


def _block_out(out, C):
    cm, o_partial, _ = out
    return cm[:, :C], cm[:, C:], cm, o_partial


def _pixel_weights(ct_weight: Tensor, oc_weight: Tensor):
    return ct_weight.contiguous(), oc_weight.contiguous()


# ----------------------------------------------------------------------------- C++
def _mims_impl(zh: Tensor, zx: Optional[Tensor], c_prev: Tensor, ct_weight: Tensor,
               oc_weight: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    h, c, acts = _ext.cpp_extension().mims_gates_forward(
        planar(zh), planar(zx) if zx is not None else None, planar(c_prev), ct_weight,
        oc_weight)
    return h, c, acts


_mims_op = torch.library.custom_op("fastcells::mims_gates", mutates_args=(),
                                   device_types="cpu")(_mims_impl)


@_mims_op.register_fake
def _(zh, zx, c_prev, ct_weight, oc_weight):
    C = c_prev.shape[1]
    return new_planes(c_prev, C), new_planes(c_prev, C), new_planes(c_prev, 4 * C)


def _mims_backward_impl(grad_h: Tensor, grad_c: Tensor, acts: Tensor, c_prev: Tensor, c: Tensor,
                        ct_weight: Tensor, oc_weight: Tensor) -> Tuple[Tensor, Tensor]:
    dz, dc_prev = _ext.cpp_extension().mims_gates_backward(
        planar(grad_h), planar(grad_c), acts, planar(c_prev), planar(c), ct_weight, oc_weight)
    return dz, dc_prev


_mims_backward_op = torch.library.custom_op("fastcells::mims_gates_backward", mutates_args=(),
                                            device_types="cpu")(_mims_backward_impl)


@_mims_backward_op.register_fake
def _(grad_h, grad_c, acts, c_prev, c, ct_weight, oc_weight):
    C = c_prev.shape[1]
    return new_planes(c_prev, 4 * C), new_planes(c_prev, C)


_mims_apply = autograd_pair("MIMSGates", _mims_impl, _mims_op, _mims_backward_impl,
                            _mims_backward_op, _mims_setup, _mims_backward)


def mims_gates_cpp(zh: Tensor, zx: Optional[Tensor], c_prev: Tensor, ct_weight: Tensor,
                   oc_weight: Tensor) -> Tuple[Tensor, Tensor]:
    """Fused C++ kernel; same contract as :func:`mims_gates_ref`."""
    return _mims_out(_mims_apply(zh, zx, c_prev, *_pixel_weights(ct_weight, oc_weight)))


def _block_impl(zx: Tensor, zt: Tensor, zs: Tensor, m_prev: Tensor,
                n_h: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    cm, o_partial, acts = _ext.cpp_extension().mim_block_gates_forward(
        planar(zx), planar(zt), planar(zs), planar(m_prev), planar(n_h))
    return cm, o_partial, acts


_block_op = torch.library.custom_op("fastcells::mim_block_gates", mutates_args=(),
                                    device_types="cpu")(_block_impl)


@_block_op.register_fake
def _(zx, zt, zs, m_prev, n_h):
    C = m_prev.shape[1]
    return new_planes(m_prev, 2 * C), new_planes(m_prev, C), new_planes(m_prev, 5 * C)


def _block_backward_impl(grad_cm: Tensor, grad_o_partial: Tensor, acts: Tensor,
                         m_prev: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    out = _ext.cpp_extension().mim_block_gates_backward(
        planar(grad_cm), planar(grad_o_partial), acts, planar(m_prev))
    return tuple(out)


_block_backward_op = torch.library.custom_op("fastcells::mim_block_gates_backward",
                                             mutates_args=(),
                                             device_types="cpu")(_block_backward_impl)


@_block_backward_op.register_fake
def _(grad_cm, grad_o_partial, acts, m_prev):
    C = m_prev.shape[1]
    return tuple(new_planes(m_prev, k * C) for k in (4, 3, 4, 1))


_block_apply = autograd_pair("MIMBlockGates", _block_impl, _block_op, _block_backward_impl,
                             _block_backward_op, _block_setup, _block_backward)


def mim_block_gates_cpp(zx: Tensor, zt: Tensor, zs: Tensor, m_prev: Tensor, n_h: Tensor):
    """Fused C++ kernel; same contract as :func:`mim_block_gates_ref`."""
    return _block_out(_block_apply(zx, zt, zs, m_prev, n_h), m_prev.shape[1])


# ----------------------------------------------------------------------------- Triton
_mims_triton_apply = autograd_pair(
    "MIMSGatesTriton",
    _triton.eager("mim_gates", "mims_forward"),
    _triton.library_op("mims_gates_triton",
                       "(Tensor zh, Tensor? zx, Tensor c_prev, Tensor ct_weight, "
                       "Tensor oc_weight) -> (Tensor, Tensor, Tensor)",
                       "mim_gates", "mims_forward"),
    _triton.eager("mim_gates", "mims_backward"),
    _triton.library_op("mims_gates_triton_backward",
                       "(Tensor grad_h, Tensor grad_c, Tensor acts, Tensor c_prev, Tensor c, "
                       "Tensor ct_weight, Tensor oc_weight) -> (Tensor, Tensor)",
                       "mim_gates", "mims_backward"),
    _mims_setup, _mims_backward)


def mims_gates_triton(zh: Tensor, zx: Optional[Tensor], c_prev: Tensor, ct_weight: Tensor,
                      oc_weight: Tensor) -> Tuple[Tensor, Tensor]:
    """Fused Triton kernels; same contract as :func:`mims_gates_ref`."""
    return _mims_out(_mims_triton_apply(zh, zx, c_prev, *_pixel_weights(ct_weight, oc_weight)))


_block_triton_apply = autograd_pair(
    "MIMBlockGatesTriton",
    _triton.eager("mim_gates", "block_forward"),
    _triton.library_op("mim_block_gates_triton",
                       "(Tensor zx, Tensor zt, Tensor zs, Tensor m_prev, Tensor n_h) "
                       "-> (Tensor, Tensor, Tensor)",
                       "mim_gates", "block_forward"),
    _triton.eager("mim_gates", "block_backward"),
    _triton.library_op("mim_block_gates_triton_backward",
                       "(Tensor grad_cm, Tensor grad_o_partial, Tensor acts, Tensor m_prev) "
                       "-> (Tensor, Tensor, Tensor, Tensor)",
                       "mim_gates", "block_backward"),
    _block_setup, _block_backward)


def mim_block_gates_triton(zx: Tensor, zt: Tensor, zs: Tensor, m_prev: Tensor, n_h: Tensor):
    """Fused Triton kernels; same contract as :func:`mim_block_gates_ref`."""
    return _block_out(_block_triton_apply(zx, zt, zs, m_prev, n_h), m_prev.shape[1])


# ----------------------------------------------------------------------------- CUDA C++
# The kernels of csrc/cuda/mim.cuh with the autograd formulas above.


def _mims_cuda_impl(zh: Tensor, zx: Optional[Tensor], c_prev: Tensor, ct_weight: Tensor,
                    oc_weight: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    h, c, acts = _cuda.extension().mims_gates_forward(
        _cuda.strided(zh), _cuda.optional(zx), _cuda.strided(c_prev), ct_weight, oc_weight,
        _cuda.channels_last(zh))
    return h, c, acts


_mims_cuda_op = torch.library.custom_op("fastcells::mims_gates_cuda", mutates_args=(),
                                        device_types="cuda")(_mims_cuda_impl)


@_mims_cuda_op.register_fake
def _(zh, zx, c_prev, ct_weight, oc_weight):
    C, cl = c_prev.shape[1], _cuda.channels_last(zh)
    return (_cuda.new_output(c_prev, C, cl), _cuda.new_output(c_prev, C, cl),
            _cuda.new_output(c_prev, 4 * C, cl))


def _mims_cuda_backward_impl(grad_h: Tensor, grad_c: Tensor, acts: Tensor, c_prev: Tensor,
                             c: Tensor, ct_weight: Tensor,
                             oc_weight: Tensor) -> Tuple[Tensor, Tensor]:
    dz, dc_prev = _cuda.extension().mims_gates_backward(
        _cuda.strided(grad_h), _cuda.strided(grad_c), _cuda.strided(acts),
        _cuda.strided(c_prev), _cuda.strided(c), ct_weight, oc_weight,
        _cuda.channels_last(acts))
    return dz, dc_prev


_mims_cuda_backward_op = torch.library.custom_op(
    "fastcells::mims_gates_cuda_backward", mutates_args=(),
    device_types="cuda")(_mims_cuda_backward_impl)


@_mims_cuda_backward_op.register_fake
def _(grad_h, grad_c, acts, c_prev, c, ct_weight, oc_weight):
    C, cl = c_prev.shape[1], _cuda.channels_last(acts)
    return _cuda.new_output(c_prev, 4 * C, cl), _cuda.new_output(c_prev, C, cl)


_mims_cuda_apply = autograd_pair("MIMSGatesCUDA", _mims_cuda_impl, _mims_cuda_op,
                                 _mims_cuda_backward_impl, _mims_cuda_backward_op,
                                 _mims_setup, _mims_backward)


def mims_gates_cuda(zh: Tensor, zx: Optional[Tensor], c_prev: Tensor, ct_weight: Tensor,
                    oc_weight: Tensor) -> Tuple[Tensor, Tensor]:
    """Fused CUDA C++ kernel; same contract as :func:`mims_gates_ref`."""
    return _mims_out(_mims_cuda_apply(zh, zx, c_prev, *_pixel_weights(ct_weight, oc_weight)))


def _block_cuda_impl(zx: Tensor, zt: Tensor, zs: Tensor, m_prev: Tensor,
                     n_h: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    cm, o_partial, acts = _cuda.extension().mim_block_gates_forward(
        _cuda.strided(zx), _cuda.strided(zt), _cuda.strided(zs), _cuda.strided(m_prev),
        _cuda.strided(n_h), _cuda.channels_last(zx))
    return cm, o_partial, acts


_block_cuda_op = torch.library.custom_op("fastcells::mim_block_gates_cuda", mutates_args=(),
                                         device_types="cuda")(_block_cuda_impl)


@_block_cuda_op.register_fake
def _(zx, zt, zs, m_prev, n_h):
    C, cl = m_prev.shape[1], _cuda.channels_last(zx)
    return (_cuda.new_output(m_prev, 2 * C, cl), _cuda.new_output(m_prev, C, cl),
            _cuda.new_output(m_prev, 5 * C, cl))


def _block_cuda_backward_impl(grad_cm: Tensor, grad_o_partial: Tensor, acts: Tensor,
                              m_prev: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    out = _cuda.extension().mim_block_gates_backward(
        _cuda.strided(grad_cm), _cuda.strided(grad_o_partial), _cuda.strided(acts),
        _cuda.strided(m_prev), _cuda.channels_last(acts))
    return tuple(out)


_block_cuda_backward_op = torch.library.custom_op(
    "fastcells::mim_block_gates_cuda_backward", mutates_args=(),
    device_types="cuda")(_block_cuda_backward_impl)


@_block_cuda_backward_op.register_fake
def _(grad_cm, grad_o_partial, acts, m_prev):
    C, cl = m_prev.shape[1], _cuda.channels_last(acts)
    return tuple(_cuda.new_output(m_prev, k * C, cl) for k in (4, 3, 4, 1))


_block_cuda_apply = autograd_pair("MIMBlockGatesCUDA", _block_cuda_impl, _block_cuda_op,
                                  _block_cuda_backward_impl, _block_cuda_backward_op,
                                  _block_setup, _block_backward)


def mim_block_gates_cuda(zx: Tensor, zt: Tensor, zs: Tensor, m_prev: Tensor, n_h: Tensor):
    """Fused CUDA C++ kernel; same contract as :func:`mim_block_gates_ref`."""
    return _block_out(_block_cuda_apply(zx, zt, zs, m_prev, n_h), m_prev.shape[1])
