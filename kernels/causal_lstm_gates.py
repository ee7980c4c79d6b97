"""Gate kernels of PredRNN++'s causal LSTM (CELLS.md section 6): three stages around the
two convolutions inside a step; the contract is csrc/causal_lstm_gates.cpp's.

Stage 1 (``c_forward``): zx (7C: i, f, g, i', f', g', o), zh (4C: i, f, g, o),
zc (3C: i, f, g), zm (3C: i', f', m_m), c_prev -> c, o_partial (o_x + o_h),
zp (4C: i'_x + i_m, f'_x + f_m, g'_x, m_m) and the activations (3C: i, f, g).
Stage 2 (``m_forward``): zp, zc2m (4C in OpenSTL's order i', g', f', o), c, o_partial ->
``[c; m]`` (2C), o_sum (o_partial + o_c) and the activations (4C: i', f', g', tanh(m_m)).
Stage 3 (``output_forward``): ``h = tanh(o_sum + zo) * tanh(zl)``, activations (2C).

Every tensor is read once and every output written once.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .convlstm_gates import acc_dtype
from .layout import launch_pointwise, load, new_like_layout, tile_offsets
from .layout import store_rn as store
from .lstm_math import memory_update, memory_update_backward, tanh


@triton.jit
def _c_forward_kernel(zx, zh, zc, zm, c_prev, c, o_partial, zp, acts, C, P,
                      zx_sb, zx_sc, zx_sp, zh_sb, zh_sc, zh_sp, zc_sb, zc_sc, zc_sp,
                      zm_sb, zm_sc, zm_sp, cp_sb, cp_sc, cp_sp, c_sb, c_sc, c_sp,
                      op_sb, op_sc, op_sp, p_sb, p_sc, p_sp, a_sb, a_sc, a_sp, forget_bias,
                      ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    # sums in OpenSTL's order: ((x + h) + c) + forget bias
    zi = (load(zx, b, ch, p, mask, zx_sb, zx_sc, zx_sp, ACC)
          + load(zh, b, ch, p, mask, zh_sb, zh_sc, zh_sp, ACC)
          + load(zc, b, ch, p, mask, zc_sb, zc_sc, zc_sp, ACC))
    zf = (load(zx, b, ch + C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
          + load(zh, b, ch + C, p, mask, zh_sb, zh_sc, zh_sp, ACC)
          + load(zc, b, ch + C, p, mask, zc_sb, zc_sc, zc_sp, ACC) + forget_bias)
    zg = (load(zx, b, ch + 2 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
          + load(zh, b, ch + 2 * C, p, mask, zh_sb, zh_sc, zh_sp, ACC)
          + load(zc, b, ch + 2 * C, p, mask, zc_sb, zc_sc, zc_sp, ACC))
    i, f, g, cn = memory_update(zi, zf, zg, load(c_prev, b, ch, p, mask, cp_sb, cp_sc, cp_sp,
                                                  ACC))
    o = (load(zx, b, ch + 6 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
         + load(zh, b, ch + 3 * C, p, mask, zh_sb, zh_sc, zh_sp, ACC))
    pi = (load(zx, b, ch + 3 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
          + load(zm, b, ch, p, mask, zm_sb, zm_sc, zm_sp, ACC))
    pf = (load(zx, b, ch + 4 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
          + load(zm, b, ch + C, p, mask, zm_sb, zm_sc, zm_sp, ACC))
    pg = load(zx, b, ch + 5 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
    pm = load(zm, b, ch + 2 * C, p, mask, zm_sb, zm_sc, zm_sp, ACC)
    store(c, cn, b, ch, p, mask, c_sb, c_sc, c_sp)
    store(o_partial, o, b, ch, p, mask, op_sb, op_sc, op_sp)
    store(zp, pi, b, ch, p, mask, p_sb, p_sc, p_sp)
    store(zp, pf, b, ch + C, p, mask, p_sb, p_sc, p_sp)
    store(zp, pg, b, ch + 2 * C, p, mask, p_sb, p_sc, p_sp)
    store(zp, pm, b, ch + 3 * C, p, mask, p_sb, p_sc, p_sp)
    store(acts, i, b, ch, p, mask, a_sb, a_sc, a_sp)
    store(acts, f, b, ch + C, p, mask, a_sb, a_sc, a_sp)
    store(acts, g, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp)


@triton.jit
def _c_backward_kernel(gc, gop, gzp, acts, c_prev, dzx, dzh, dzc, dzm, dc_prev, C, P,
                       gc_sb, gc_sc, gc_sp, gop_sb, gop_sc, gop_sp, gp_sb, gp_sc, gp_sp,
                       a_sb, a_sc, a_sp, cp_sb, cp_sc, cp_sp, dx_sb, dx_sc, dx_sp,
                       dh_sb, dh_sc, dh_sp, dc_sb, dc_sc, dc_sp, dm_sb, dm_sc, dm_sp,
                       dcp_sb, dcp_sc, dcp_sp,
                       ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    di, df, dg, dcp = memory_update_backward(
        load(gc, b, ch, p, mask, gc_sb, gc_sc, gc_sp, ACC),
        load(acts, b, ch, p, mask, a_sb, a_sc, a_sp, ACC),
        load(acts, b, ch + C, p, mask, a_sb, a_sc, a_sp, ACC),
        load(acts, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp, ACC),
        load(c_prev, b, ch, p, mask, cp_sb, cp_sc, cp_sp, ACC))
    do = load(gop, b, ch, p, mask, gop_sb, gop_sc, gop_sp, ACC)
    dpi = load(gzp, b, ch, p, mask, gp_sb, gp_sc, gp_sp, ACC)
    dpf = load(gzp, b, ch + C, p, mask, gp_sb, gp_sc, gp_sp, ACC)
    dpg = load(gzp, b, ch + 2 * C, p, mask, gp_sb, gp_sc, gp_sp, ACC)
    dpm = load(gzp, b, ch + 3 * C, p, mask, gp_sb, gp_sc, gp_sp, ACC)
    # every summand of a pre-activation gets its gradient
    store(dzx, di, b, ch, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, df, b, ch + C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, dg, b, ch + 2 * C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, dpi, b, ch + 3 * C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, dpf, b, ch + 4 * C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, dpg, b, ch + 5 * C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, do, b, ch + 6 * C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzh, di, b, ch, p, mask, dh_sb, dh_sc, dh_sp)
    store(dzh, df, b, ch + C, p, mask, dh_sb, dh_sc, dh_sp)
    store(dzh, dg, b, ch + 2 * C, p, mask, dh_sb, dh_sc, dh_sp)
    store(dzh, do, b, ch + 3 * C, p, mask, dh_sb, dh_sc, dh_sp)
    store(dzc, di, b, ch, p, mask, dc_sb, dc_sc, dc_sp)
    store(dzc, df, b, ch + C, p, mask, dc_sb, dc_sc, dc_sp)
    store(dzc, dg, b, ch + 2 * C, p, mask, dc_sb, dc_sc, dc_sp)
    store(dzm, dpi, b, ch, p, mask, dm_sb, dm_sc, dm_sp)
    store(dzm, dpf, b, ch + C, p, mask, dm_sb, dm_sc, dm_sp)
    store(dzm, dpm, b, ch + 2 * C, p, mask, dm_sb, dm_sc, dm_sp)
    store(dc_prev, dcp, b, ch, p, mask, dcp_sb, dcp_sc, dcp_sp)


@triton.jit
def _m_forward_kernel(zp, zc2m, c, o_partial, cm, o_sum, acts, C, P,
                      p_sb, p_sc, p_sp, z_sb, z_sc, z_sp, c_sb, c_sc, c_sp, op_sb, op_sc, op_sp,
                      cm_sb, cm_sc, cm_sp, os_sb, os_sc, os_sp, a_sb, a_sc, a_sp, forget_bias,
                      ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    tm = tanh(load(zp, b, ch + 3 * C, p, mask, p_sb, p_sc, p_sp, ACC))
    # conv_c2m's channels: i', g', f', o
    zi = (load(zp, b, ch, p, mask, p_sb, p_sc, p_sp, ACC)
          + load(zc2m, b, ch, p, mask, z_sb, z_sc, z_sp, ACC))
    zf = (load(zp, b, ch + C, p, mask, p_sb, p_sc, p_sp, ACC)
          + load(zc2m, b, ch + 2 * C, p, mask, z_sb, z_sc, z_sp, ACC) + forget_bias)
    zg = (load(zp, b, ch + 2 * C, p, mask, p_sb, p_sc, p_sp, ACC)
          + load(zc2m, b, ch + C, p, mask, z_sb, z_sc, z_sp, ACC))
    i, f, g, m = memory_update(zi, zf, zg, tm)  # m = f' tanh(m_m) + i' g'
    o = (load(o_partial, b, ch, p, mask, op_sb, op_sc, op_sp, ACC)
         + load(zc2m, b, ch + 3 * C, p, mask, z_sb, z_sc, z_sp, ACC))
    store(cm, load(c, b, ch, p, mask, c_sb, c_sc, c_sp, ACC), b, ch, p, mask, cm_sb, cm_sc, cm_sp)
    store(cm, m, b, ch + C, p, mask, cm_sb, cm_sc, cm_sp)
    store(o_sum, o, b, ch, p, mask, os_sb, os_sc, os_sp)
    store(acts, i, b, ch, p, mask, a_sb, a_sc, a_sp)
    store(acts, f, b, ch + C, p, mask, a_sb, a_sc, a_sp)
    store(acts, g, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp)
    store(acts, tm, b, ch + 3 * C, p, mask, a_sb, a_sc, a_sp)


@triton.jit
def _m_backward_kernel(gm, gos, acts, dzp, dzc2m, C, P, gm_sb, gm_sc, gm_sp,
                       gos_sb, gos_sc, gos_sp, a_sb, a_sc, a_sp, dp_sb, dp_sc, dp_sp,
                       dz_sb, dz_sc, dz_sp,
                       ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    tm = load(acts, b, ch + 3 * C, p, mask, a_sb, a_sc, a_sp, ACC)
    di, df, dg, dtm = memory_update_backward(
        load(gm, b, ch, p, mask, gm_sb, gm_sc, gm_sp, ACC),
        load(acts, b, ch, p, mask, a_sb, a_sc, a_sp, ACC),
        load(acts, b, ch + C, p, mask, a_sb, a_sc, a_sp, ACC),
        load(acts, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp, ACC), tm)
    store(dzp, di, b, ch, p, mask, dp_sb, dp_sc, dp_sp)
    store(dzp, df, b, ch + C, p, mask, dp_sb, dp_sc, dp_sp)
    store(dzp, dg, b, ch + 2 * C, p, mask, dp_sb, dp_sc, dp_sp)
    store(dzp, dtm * (1.0 - tm * tm), b, ch + 3 * C, p, mask, dp_sb, dp_sc, dp_sp)
    store(dzc2m, di, b, ch, p, mask, dz_sb, dz_sc, dz_sp)
    store(dzc2m, dg, b, ch + C, p, mask, dz_sb, dz_sc, dz_sp)
    store(dzc2m, df, b, ch + 2 * C, p, mask, dz_sb, dz_sc, dz_sp)
    store(dzc2m, load(gos, b, ch, p, mask, gos_sb, gos_sc, gos_sp, ACC), b, ch + 3 * C, p, mask,
          dz_sb, dz_sc, dz_sp)


@triton.jit
def _output_forward_kernel(o_sum, zo, zl, h, acts, C, P, os_sb, os_sc, os_sp,
                           zo_sb, zo_sc, zo_sp, zl_sb, zl_sc, zl_sp, h_sb, h_sc, h_sp,
                           a_sb, a_sc, a_sp,
                           ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    o = tanh(load(o_sum, b, ch, p, mask, os_sb, os_sc, os_sp, ACC)
             + load(zo, b, ch, p, mask, zo_sb, zo_sc, zo_sp, ACC))  # tanh, not sigmoid
    t = tanh(load(zl, b, ch, p, mask, zl_sb, zl_sc, zl_sp, ACC))
    store(h, o * t, b, ch, p, mask, h_sb, h_sc, h_sp)
    store(acts, o, b, ch, p, mask, a_sb, a_sc, a_sp)
    store(acts, t, b, ch + C, p, mask, a_sb, a_sc, a_sp)


@triton.jit
def _output_backward_kernel(grad_h, acts, d_o, d_l, C, P, gh_sb, gh_sc, gh_sp, a_sb, a_sc, a_sp,
                            do_sb, do_sc, do_sp, dl_sb, dl_sc, dl_sp,
                            ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    gh = load(grad_h, b, ch, p, mask, gh_sb, gh_sc, gh_sp, ACC)
    o = load(acts, b, ch, p, mask, a_sb, a_sc, a_sp, ACC)
    t = load(acts, b, ch + C, p, mask, a_sb, a_sc, a_sp, ACC)
    store(d_o, gh * t * (1.0 - o * o), b, ch, p, mask, do_sb, do_sc, do_sp)
    store(d_l, gh * o * (1.0 - t * t), b, ch, p, mask, dl_sb, dl_sc, dl_sp)


def c_forward(launch, zx, zh, zc, zm, c_prev, forget_bias: float):
    """Returns ``(c, o_partial, zp, acts)``."""
    C = c_prev.shape[1]
    outs = tuple(new_like_layout(zx, k * C) for k in (1, 1, 4, 3))
    launch_pointwise(launch, _c_forward_kernel, (zx, zh, zc, zm, c_prev), outs, C,
                     extra=(float(forget_bias),), ACC=acc_dtype(zx.dtype))
    return outs


def c_backward(launch, grad_c, grad_o_partial, grad_zp, acts, c_prev):
    """Returns ``(dzx, dzh, dzc, dzm, dc_prev)``."""
    C = c_prev.shape[1]
    outs = tuple(new_like_layout(acts, k * C) for k in (7, 4, 3, 3, 1))
    launch_pointwise(launch, _c_backward_kernel, (grad_c, grad_o_partial, grad_zp, acts, c_prev),
                     outs, C, ACC=acc_dtype(acts.dtype))
    return outs


def m_forward(launch, zp, zc2m, c, o_partial, forget_bias: float):
    """Returns ``(cm, o_sum, acts)``."""
    C = c.shape[1]
    outs = tuple(new_like_layout(zp, k * C) for k in (2, 1, 4))
    launch_pointwise(launch, _m_forward_kernel, (zp, zc2m, c, o_partial), outs, C,
                     extra=(float(forget_bias),), ACC=acc_dtype(zp.dtype))
    return outs


def m_backward(launch, grad_m, grad_o_sum, acts):
    """Returns ``(dzp, dzc2m)``."""
    C = grad_m.shape[1]
    outs = (new_like_layout(acts, 4 * C), new_like_layout(acts, 4 * C))
    launch_pointwise(launch, _m_backward_kernel, (grad_m, grad_o_sum, acts), outs, C,
                     ACC=acc_dtype(acts.dtype))
    return outs


def output_forward(launch, o_sum, zo, zl):
    """Returns ``(h, acts)``."""
    C = zl.shape[1]
    outs = (new_like_layout(zl, C), new_like_layout(zl, 2 * C))
    launch_pointwise(launch, _output_forward_kernel, (o_sum, zo, zl), outs, C,
                     ACC=acc_dtype(zl.dtype))
    return outs


def output_backward(launch, grad_h, acts):
    """Returns ``(d_o_sum, d_zl)``; zo's gradient equals o_sum's."""
    C = acts.shape[1] // 2
    outs = (new_like_layout(acts, C), new_like_layout(acts, C))
    launch_pointwise(launch, _output_backward_kernel, (grad_h, acts), outs, C,
                     ACC=acc_dtype(acts.dtype))
    return outs
