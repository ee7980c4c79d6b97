"""First-stage gate kernels of the two-memory cells (CELLS.md sections 2 and 3).

ST-LSTM: zx (7C: i, f, g, i', f', g', o), zh (4C: i, f, g, o), zm (3C: i', f', g'),
c_prev, m_prev -> ``[c; m]`` (2C, the buffer the next convolutions read), o_partial
(o_x + o_h) and the activations (6C: i, f, g, i', f', g') backward reads; optionally the
deltas (i*g, i'*g') of PredRNN-v2's decoupling loss.
MK-LSTM: z1, z2 (4C each: i, f, g, o), c1_prev, c2_prev -> ``[c1; c2]``, o_partial
(o1 + o2), activations (6C: i1, f1, g1, i2, f2, g2).

Every tensor is read once and every output written once.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .convlstm_gates import acc_dtype
from .layout import launch_pointwise, load, new_like_layout, store, tile_offsets
from .lstm_math import memory_update, memory_update_backward

@triton.jit
def _stlstm_forward_kernel(zx, zh, zm, c_prev, m_prev, cm, o_partial, acts, deltas, C, P,
                           zx_sb, zx_sc, zx_sp, zh_sb, zh_sc, zh_sp, zm_sb, zm_sc, zm_sp,
                           cp_sb, cp_sc, cp_sp, mp_sb, mp_sc, mp_sp, cm_sb, cm_sc, cm_sp,
                           op_sb, op_sc, op_sp, a_sb, a_sc, a_sp, d_sb, d_sc, d_sp,
                           forget_bias, DELTAS: tl.constexpr, ACC: tl.constexpr,
                           BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    zi = (load(zx, b, ch, p, mask, zx_sb, zx_sc, zx_sp, ACC)
          + load(zh, b, ch, p, mask, zh_sb, zh_sc, zh_sp, ACC))
    zf = (load(zx, b, ch + C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
          + load(zh, b, ch + C, p, mask, zh_sb, zh_sc, zh_sp, ACC) + forget_bias)
    zg = (load(zx, b, ch + 2 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
          + load(zh, b, ch + 2 * C, p, mask, zh_sb, zh_sc, zh_sp, ACC))
    cp = load(c_prev, b, ch, p, mask, cp_sb, cp_sc, cp_sp, ACC)
    i, f, g, c = memory_update(zi, zf, zg, cp)
    zi2 = (load(zx, b, ch + 3 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
           + load(zm, b, ch, p, mask, zm_sb, zm_sc, zm_sp, ACC))
    zf2 = (load(zx, b, ch + 4 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
           + load(zm, b, ch + C, p, mask, zm_sb, zm_sc, zm_sp, ACC) + forget_bias)
    zg2 = (load(zx, b, ch + 5 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
           + load(zm, b, ch + 2 * C, p, mask, zm_sb, zm_sc, zm_sp, ACC))
    mp = load(m_prev, b, ch, p, mask, mp_sb, mp_sc, mp_sp, ACC)
    i2, f2, g2, m = memory_update(zi2, zf2, zg2, mp)
    o = (load(zx, b, ch + 6 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
         + load(zh, b, ch + 3 * C, p, mask, zh_sb, zh_sc, zh_sp, ACC))
    store(cm, c, b, ch, p, mask, cm_sb, cm_sc, cm_sp)
    store(cm, m, b, ch + C, p, mask, cm_sb, cm_sc, cm_sp)
    store(o_partial, o, b, ch, p, mask, op_sb, op_sc, op_sp)
    store(acts, i, b, ch, p, mask, a_sb, a_sc, a_sp)
    store(acts, f, b, ch + C, p, mask, a_sb, a_sc, a_sp)
    store(acts, g, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp)
    store(acts, i2, b, ch + 3 * C, p, mask, a_sb, a_sc, a_sp)
    store(acts, f2, b, ch + 4 * C, p, mask, a_sb, a_sc, a_sp)
    store(acts, g2, b, ch + 5 * C, p, mask, a_sb, a_sc, a_sp)
    if DELTAS:
        store(deltas, i * g, b, ch, p, mask, d_sb, d_sc, d_sp)
        store(deltas, i2 * g2, b, ch + C, p, mask, d_sb, d_sc, d_sp)


@triton.jit
def _stlstm_backward_kernel(gcm, gop, gdel, acts, c_prev, m_prev, dzx, dzh, dzm, dc_prev,
                            dm_prev, C, P,
                            gcm_sb, gcm_sc, gcm_sp, gop_sb, gop_sc, gop_sp,
                            gd_sb, gd_sc, gd_sp, a_sb, a_sc, a_sp, cp_sb, cp_sc, cp_sp,
                            mp_sb, mp_sc, mp_sp, dx_sb, dx_sc, dx_sp, dh_sb, dh_sc, dh_sp,
                            dm_sb, dm_sc, dm_sp, dcp_sb, dcp_sc, dcp_sp,
                            dmp_sb, dmp_sc, dmp_sp,
                            DELTAS: tl.constexpr, ACC: tl.constexpr,
                            BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    i = load(acts, b, ch, p, mask, a_sb, a_sc, a_sp, ACC)
    f = load(acts, b, ch + C, p, mask, a_sb, a_sc, a_sp, ACC)
    g = load(acts, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp, ACC)
    i2 = load(acts, b, ch + 3 * C, p, mask, a_sb, a_sc, a_sp, ACC)
    f2 = load(acts, b, ch + 4 * C, p, mask, a_sb, a_sc, a_sp, ACC)
    g2 = load(acts, b, ch + 5 * C, p, mask, a_sb, a_sc, a_sp, ACC)
    cp = load(c_prev, b, ch, p, mask, cp_sb, cp_sc, cp_sp, ACC)
    mp = load(m_prev, b, ch, p, mask, mp_sb, mp_sc, mp_sp, ACC)
    di, df, dg, dcp = memory_update_backward(
        load(gcm, b, ch, p, mask, gcm_sb, gcm_sc, gcm_sp, ACC), i, f, g, cp)
    di2, df2, dg2, dmp = memory_update_backward(
        load(gcm, b, ch + C, p, mask, gcm_sb, gcm_sc, gcm_sp, ACC), i2, f2, g2, mp)
    if DELTAS:  # delta_c = i * g, delta_m = i' * g'
        dd = load(gdel, b, ch, p, mask, gd_sb, gd_sc, gd_sp, ACC)
        di += dd * g * i * (1.0 - i)
        dg += dd * i * (1.0 - g * g)
        dd2 = load(gdel, b, ch + C, p, mask, gd_sb, gd_sc, gd_sp, ACC)
        di2 += dd2 * g2 * i2 * (1.0 - i2)
        dg2 += dd2 * i2 * (1.0 - g2 * g2)
    do = load(gop, b, ch, p, mask, gop_sb, gop_sc, gop_sp, ACC)
    # zx and zh (zm) are summed before the nonlinearities: they share gradients.
    store(dzx, di, b, ch, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, df, b, ch + C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, dg, b, ch + 2 * C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, di2, b, ch + 3 * C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, df2, b, ch + 4 * C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, dg2, b, ch + 5 * C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, do, b, ch + 6 * C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzh, di, b, ch, p, mask, dh_sb, dh_sc, dh_sp)
    store(dzh, df, b, ch + C, p, mask, dh_sb, dh_sc, dh_sp)
    store(dzh, dg, b, ch + 2 * C, p, mask, dh_sb, dh_sc, dh_sp)
    store(dzh, do, b, ch + 3 * C, p, mask, dh_sb, dh_sc, dh_sp)
    store(dzm, di2, b, ch, p, mask, dm_sb, dm_sc, dm_sp)
    store(dzm, df2, b, ch + C, p, mask, dm_sb, dm_sc, dm_sp)
    store(dzm, dg2, b, ch + 2 * C, p, mask, dm_sb, dm_sc, dm_sp)
    store(dc_prev, dcp, b, ch, p, mask, dcp_sb, dcp_sc, dcp_sp)
    store(dm_prev, dmp, b, ch, p, mask, dmp_sb, dmp_sc, dmp_sp)


@triton.jit
def _mklstm_forward_kernel(z1, z2, c1_prev, c2_prev, cc, o_partial, acts, C, P,
                           z1_sb, z1_sc, z1_sp, z2_sb, z2_sc, z2_sp, c1_sb, c1_sc, c1_sp,
                           c2_sb, c2_sc, c2_sp, cc_sb, cc_sc, cc_sp, op_sb, op_sc, op_sp,
                           a_sb, a_sc, a_sp,
                           ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    i1, f1, g1, c1 = memory_update(load(z1, b, ch, p, mask, z1_sb, z1_sc, z1_sp, ACC),
                                   load(z1, b, ch + C, p, mask, z1_sb, z1_sc, z1_sp, ACC),
                                   load(z1, b, ch + 2 * C, p, mask, z1_sb, z1_sc, z1_sp, ACC),
                                   load(c1_prev, b, ch, p, mask, c1_sb, c1_sc, c1_sp, ACC))
    i2, f2, g2, c2 = memory_update(load(z2, b, ch, p, mask, z2_sb, z2_sc, z2_sp, ACC),
                                   load(z2, b, ch + C, p, mask, z2_sb, z2_sc, z2_sp, ACC),
                                   load(z2, b, ch + 2 * C, p, mask, z2_sb, z2_sc, z2_sp, ACC),
                                   load(c2_prev, b, ch, p, mask, c2_sb, c2_sc, c2_sp, ACC))
    o = (load(z1, b, ch + 3 * C, p, mask, z1_sb, z1_sc, z1_sp, ACC)
         + load(z2, b, ch + 3 * C, p, mask, z2_sb, z2_sc, z2_sp, ACC))
    store(cc, c1, b, ch, p, mask, cc_sb, cc_sc, cc_sp)
    store(cc, c2, b, ch + C, p, mask, cc_sb, cc_sc, cc_sp)
    store(o_partial, o, b, ch, p, mask, op_sb, op_sc, op_sp)
    store(acts, i1, b, ch, p, mask, a_sb, a_sc, a_sp)
    store(acts, f1, b, ch + C, p, mask, a_sb, a_sc, a_sp)
    store(acts, g1, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp)
    store(acts, i2, b, ch + 3 * C, p, mask, a_sb, a_sc, a_sp)
    store(acts, f2, b, ch + 4 * C, p, mask, a_sb, a_sc, a_sp)
    store(acts, g2, b, ch + 5 * C, p, mask, a_sb, a_sc, a_sp)


@triton.jit
def _mklstm_backward_kernel(gcc, gop, acts, c1_prev, c2_prev, dz1, dz2, dc1, dc2, C, P,
                            gcc_sb, gcc_sc, gcc_sp, gop_sb, gop_sc, gop_sp,
                            a_sb, a_sc, a_sp, c1_sb, c1_sc, c1_sp, c2_sb, c2_sc, c2_sp,
                            d1_sb, d1_sc, d1_sp, d2_sb, d2_sc, d2_sp,
                            dc1_sb, dc1_sc, dc1_sp, dc2_sb, dc2_sc, dc2_sp,
                            ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    di1, df1, dg1, dcp1 = memory_update_backward(
        load(gcc, b, ch, p, mask, gcc_sb, gcc_sc, gcc_sp, ACC),
        load(acts, b, ch, p, mask, a_sb, a_sc, a_sp, ACC),
        load(acts, b, ch + C, p, mask, a_sb, a_sc, a_sp, ACC),
        load(acts, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp, ACC),
        load(c1_prev, b, ch, p, mask, c1_sb, c1_sc, c1_sp, ACC))
    di2, df2, dg2, dcp2 = memory_update_backward(
        load(gcc, b, ch + C, p, mask, gcc_sb, gcc_sc, gcc_sp, ACC),
        load(acts, b, ch + 3 * C, p, mask, a_sb, a_sc, a_sp, ACC),
        load(acts, b, ch + 4 * C, p, mask, a_sb, a_sc, a_sp, ACC),
        load(acts, b, ch + 5 * C, p, mask, a_sb, a_sc, a_sp, ACC),
        load(c2_prev, b, ch, p, mask, c2_sb, c2_sc, c2_sp, ACC))
    do = load(gop, b, ch, p, mask, gop_sb, gop_sc, gop_sp, ACC)
    store(dz1, di1, b, ch, p, mask, d1_sb, d1_sc, d1_sp)
    store(dz1, df1, b, ch + C, p, mask, d1_sb, d1_sc, d1_sp)
    store(dz1, dg1, b, ch + 2 * C, p, mask, d1_sb, d1_sc, d1_sp)
    store(dz1, do, b, ch + 3 * C, p, mask, d1_sb, d1_sc, d1_sp)
    store(dz2, di2, b, ch, p, mask, d2_sb, d2_sc, d2_sp)
    store(dz2, df2, b, ch + C, p, mask, d2_sb, d2_sc, d2_sp)
    store(dz2, dg2, b, ch + 2 * C, p, mask, d2_sb, d2_sc, d2_sp)
    store(dz2, do, b, ch + 3 * C, p, mask, d2_sb, d2_sc, d2_sp)
    store(dc1, dcp1, b, ch, p, mask, dc1_sb, dc1_sc, dc1_sp)
    store(dc2, dcp2, b, ch, p, mask, dc2_sb, dc2_sc, dc2_sp)


def stlstm_forward(launch, zx, zh, zm, c_prev, m_prev, return_deltas: bool,
                   forget_bias: float = 1.0):
    """Returns ``(cm, o_partial, acts, deltas or an empty tensor)``."""
    C = c_prev.shape[1]
    cm, o_partial, acts = (new_like_layout(zx, 2 * C), new_like_layout(zx, C),
                           new_like_layout(zx, 6 * C))
    deltas = new_like_layout(zx, 2 * C) if return_deltas else zx.new_empty(0)
    launch_pointwise(launch, _stlstm_forward_kernel, (zx, zh, zm, c_prev, m_prev),
                     (cm, o_partial, acts, deltas if return_deltas else cm), C,
                     extra=(float(forget_bias),), DELTAS=return_deltas, ACC=acc_dtype(zx.dtype))
    return cm, o_partial, acts, deltas


def stlstm_backward(launch, grad_cm, grad_o_partial, grad_deltas, acts, c_prev, m_prev):
    """Returns ``(dzx, dzh, dzm, dc_prev, dm_prev)``."""
    C = c_prev.shape[1]
    outs = tuple(new_like_layout(acts, k * C) for k in (7, 4, 3, 1, 1))
    has_deltas = grad_deltas is not None
    # Without deltas the kernel never reads its grad_deltas argument (any tensor will do).
    launch_pointwise(launch, _stlstm_backward_kernel,
                     (grad_cm, grad_o_partial, grad_deltas if has_deltas else grad_cm, acts,
                      c_prev, m_prev), outs, C, DELTAS=has_deltas, ACC=acc_dtype(acts.dtype))
    return outs


def mklstm_forward(launch, z1, z2, c1_prev, c2_prev):
    """Returns ``(cc, o_partial, acts)``."""
    C = c1_prev.shape[1]
    outs = (new_like_layout(z1, 2 * C), new_like_layout(z1, C), new_like_layout(z1, 6 * C))
    launch_pointwise(launch, _mklstm_forward_kernel, (z1, z2, c1_prev, c2_prev), outs, C,
                     ACC=acc_dtype(z1.dtype))
    return outs


def mklstm_backward(launch, grad_cc, grad_o_partial, acts, c1_prev, c2_prev):
    """Returns ``(dz1, dz2, dc1_prev, dc2_prev)``."""
    C = c1_prev.shape[1]
    outs = tuple(new_like_layout(acts, k * C) for k in (4, 4, 1, 1))
    launch_pointwise(launch, _mklstm_backward_kernel,
                     (grad_cc, grad_o_partial, acts, c1_prev, c2_prev), outs, C,
                     ACC=acc_dtype(acts.dtype))
    return outs
