"""Output gate kernels of ST-LSTM and MK-LSTM: ``h = sigmoid(o_partial + zo) * tanh(zl)``.

Forward saves ``acts = (o, tanh(zl))`` (2C, the bytes of the two pre-activations it
replaces) so backward needs no transcendental.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .convlstm_gates import acc_dtype
from .layout import launch_pointwise, load, new_like_layout, store, tile_offsets
from .lstm_math import sigmoid, tanh


@triton.jit
def _forward_kernel(o_partial, zo, zl, h, acts, C, P, op_sb, op_sc, op_sp, zo_sb, zo_sc, zo_sp,
                    zl_sb, zl_sc, zl_sp, h_sb, h_sc, h_sp, a_sb, a_sc, a_sp,
                    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    o = sigmoid(load(o_partial, b, ch, p, mask, op_sb, op_sc, op_sp, ACC)
                + load(zo, b, ch, p, mask, zo_sb, zo_sc, zo_sp, ACC))
    t = tanh(load(zl, b, ch, p, mask, zl_sb, zl_sc, zl_sp, ACC))
    store(h, o * t, b, ch, p, mask, h_sb, h_sc, h_sp)
    store(acts, o, b, ch, p, mask, a_sb, a_sc, a_sp)
    store(acts, t, b, ch + C, p, mask, a_sb, a_sc, a_sp)


@triton.jit
def _backward_kernel(grad_h, acts, d_o, d_l, C, P, gh_sb, gh_sc, gh_sp, a_sb, a_sc, a_sp,
                     do_sb, do_sc, do_sp, dl_sb, dl_sc, dl_sp,
                     ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    gh = load(grad_h, b, ch, p, mask, gh_sb, gh_sc, gh_sp, ACC)
    o = load(acts, b, ch, p, mask, a_sb, a_sc, a_sp, ACC)
    t = load(acts, b, ch + C, p, mask, a_sb, a_sc, a_sp, ACC)
    store(d_o, gh * t * o * (1.0 - o), b, ch, p, mask, do_sb, do_sc, do_sp)
    store(d_l, gh * o * (1.0 - t * t), b, ch, p, mask, dl_sb, dl_sc, dl_sp)


def forward(launch, o_partial, zo, zl):
    """Returns ``(h, acts)``."""
    C = zl.shape[1]
    outs = (new_like_layout(zl, C), new_like_layout(zl, 2 * C))
    launch_pointwise(launch, _forward_kernel, (o_partial, zo, zl), outs, C,
                     ACC=acc_dtype(zl.dtype))
    return outs


def backward(launch, grad_h, acts):
    """Returns ``(d_o_partial, d_zl)``; zo's gradient equals o_partial's."""
    C = acts.shape[1] // 2
    outs = (new_like_layout(acts, C), new_like_layout(acts, C))
    launch_pointwise(launch, _backward_kernel, (grad_h, acts), outs, C,
                     ACC=acc_dtype(acts.dtype))
    return outs
