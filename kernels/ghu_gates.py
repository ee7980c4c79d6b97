"""Gate kernels of PredRNN++'s gradient highway unit (CELLS.md section 6)::

    p, u = split(zx + zz)            (2C each: x_concat(x), z_concat(z_prev))
    z = sigmoid(u) * tanh(p) + (1 - sigmoid(u)) * z_prev

Forward saves ``acts = (tanh(p), sigmoid(u))``; backward returns one (B, 2C) gradient that
serves both zx and zz (they are summed before the nonlinearities).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .convlstm_gates import acc_dtype
from .layout import launch_pointwise, load, new_like_layout, tile_offsets
from .layout import store_rn as store
from .lstm_math import sigmoid, tanh


@triton.jit
def _forward_kernel(zx, zz, z_prev, z, acts, C, P, zx_sb, zx_sc, zx_sp, zz_sb, zz_sc, zz_sp,
                    zp_sb, zp_sc, zp_sp, z_sb, z_sc, z_sp, a_sb, a_sc, a_sp,
                    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    tp = tanh(load(zx, b, ch, p, mask, zx_sb, zx_sc, zx_sp, ACC)
              + load(zz, b, ch, p, mask, zz_sb, zz_sc, zz_sp, ACC))
    u = sigmoid(load(zx, b, ch + C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
                + load(zz, b, ch + C, p, mask, zz_sb, zz_sc, zz_sp, ACC))
    prev = load(z_prev, b, ch, p, mask, zp_sb, zp_sc, zp_sp, ACC)
    store(z, u * tp + (1.0 - u) * prev, b, ch, p, mask, z_sb, z_sc, z_sp)
    store(acts, tp, b, ch, p, mask, a_sb, a_sc, a_sp)
    store(acts, u, b, ch + C, p, mask, a_sb, a_sc, a_sp)


@triton.jit
def _backward_kernel(grad_z, acts, z_prev, d_pu, d_prev, C, P, gz_sb, gz_sc, gz_sp,
                     a_sb, a_sc, a_sp, zp_sb, zp_sc, zp_sp, dpu_sb, dpu_sc, dpu_sp,
                     dp_sb, dp_sc, dp_sp,
                     ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    g = load(grad_z, b, ch, p, mask, gz_sb, gz_sc, gz_sp, ACC)
    tp = load(acts, b, ch, p, mask, a_sb, a_sc, a_sp, ACC)
    u = load(acts, b, ch + C, p, mask, a_sb, a_sc, a_sp, ACC)
    prev = load(z_prev, b, ch, p, mask, zp_sb, zp_sc, zp_sp, ACC)
    store(d_pu, g * u * (1.0 - tp * tp), b, ch, p, mask, dpu_sb, dpu_sc, dpu_sp)
    store(d_pu, g * (tp - prev) * u * (1.0 - u), b, ch + C, p, mask, dpu_sb, dpu_sc, dpu_sp)
    store(d_prev, g * (1.0 - u), b, ch, p, mask, dp_sb, dp_sc, dp_sp)


def forward(launch, zx, zz, z_prev):
    """Returns ``(z, acts)``."""
    C = z_prev.shape[1]
    outs = (new_like_layout(zx, C), new_like_layout(zx, 2 * C))
    launch_pointwise(launch, _forward_kernel, (zx, zz, z_prev), outs, C, ACC=acc_dtype(zx.dtype))
    return outs


def backward(launch, grad_z, acts, z_prev):
    """Returns ``(d_pu, d_z_prev)``; ``d_pu`` is the gradient of both zx and zz."""
    C = z_prev.shape[1]
    outs = (new_like_layout(acts, 2 * C), new_like_layout(acts, C))
    launch_pointwise(launch, _backward_kernel, (grad_z, acts, z_prev), outs, C,
                     ACC=acc_dtype(acts.dtype))
    return outs
