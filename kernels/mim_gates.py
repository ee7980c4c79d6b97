"""Gate kernels of MIM (CELLS.md section 7, OpenSTL ``mim_modules.py``).

Stationarity module (``MIMN``, and the ``MIMS`` inside ``MIMBlock``): zh, zx (4C each, gate
order i, g, f, o; zx optional), c_prev and the per-pixel peepholes ct (2C, H, W) and oc
(C, H, W) -> h, c and the activations ``acts = (i, g, f, o)`` (4C) that backward reads. The
backward writes the pre-activation gradient (zh's and zx's alike) and c_prev's; the
peephole gradients are reduced over the batch by the op wrapper from it.

Block gates (``MIMBlock``): zx (4C: i, g, f, o), zt (3C: i, g, o), zs (4C: i, g, f, o),
m_prev, n_h -> ``[c; m]`` (2C), o_partial (o_x + o_t) and the activations (5C: i_c, g_c,
i_m, f_m, g_m).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .convlstm_gates import acc_dtype
from .layout import launch_pointwise, load, new_like_layout, store, tile_offsets
from .lstm_math import memory_update, memory_update_backward, sigmoid, tanh

FORGET_BIAS = 1.0  # OpenSTL's _forget_bias


@triton.jit
def _pixel(w, ch, p, P, mask, ACC: tl.constexpr):
    """Element (ch, p) of a contiguous (channels, H, W) per-pixel weight."""
    return tl.load(w + ch * P + p, mask=mask, other=0.0).to(ACC)


@triton.jit
def _mims_forward_kernel(zh, zx, c_prev, h, c_out, acts, C, P,
                         zh_sb, zh_sc, zh_sp, zx_sb, zx_sc, zx_sp, cp_sb, cp_sc, cp_sp,
                         h_sb, h_sc, h_sp, c_sb, c_sc, c_sp, a_sb, a_sc, a_sp, ct, oc,
                         HAS_X: tl.constexpr, FORGET: tl.constexpr, ACC: tl.constexpr,
                         BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    zi = load(zh, b, ch, p, mask, zh_sb, zh_sc, zh_sp, ACC)
    zg = load(zh, b, ch + C, p, mask, zh_sb, zh_sc, zh_sp, ACC)
    zf = load(zh, b, ch + 2 * C, p, mask, zh_sb, zh_sc, zh_sp, ACC)
    zo = load(zh, b, ch + 3 * C, p, mask, zh_sb, zh_sc, zh_sp, ACC)
    if HAS_X:
        zi += load(zx, b, ch, p, mask, zx_sb, zx_sc, zx_sp, ACC)
        zg += load(zx, b, ch + C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
        zf += load(zx, b, ch + 2 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
        zo += load(zx, b, ch + 3 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
    cp = load(c_prev, b, ch, p, mask, cp_sb, cp_sc, cp_sp, ACC)
    zi += _pixel(ct, ch, p, P, mask, ACC) * cp
    zf += _pixel(ct, ch + C, p, P, mask, ACC) * cp + FORGET
    i, f, g, c = memory_update(zi, zf, zg, cp)
    o = sigmoid(zo + _pixel(oc, ch, p, P, mask, ACC) * c)
    store(h, o * tanh(c), b, ch, p, mask, h_sb, h_sc, h_sp)
    store(c_out, c, b, ch, p, mask, c_sb, c_sc, c_sp)
    store(acts, i, b, ch, p, mask, a_sb, a_sc, a_sp)
    store(acts, g, b, ch + C, p, mask, a_sb, a_sc, a_sp)
    store(acts, f, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp)
    store(acts, o, b, ch + 3 * C, p, mask, a_sb, a_sc, a_sp)


@triton.jit
def _mims_backward_kernel(dh, dc, acts, c_prev, c, dz, dc_prev, C, P,
                          dh_sb, dh_sc, dh_sp, dc_sb, dc_sc, dc_sp, a_sb, a_sc, a_sp,
                          cp_sb, cp_sc, cp_sp, c_sb, c_sc, c_sp, dz_sb, dz_sc, dz_sp,
                          dcp_sb, dcp_sc, dcp_sp, ct, oc,
                          ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    i = load(acts, b, ch, p, mask, a_sb, a_sc, a_sp, ACC)
    g = load(acts, b, ch + C, p, mask, a_sb, a_sc, a_sp, ACC)
    f = load(acts, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp, ACC)
    o = load(acts, b, ch + 3 * C, p, mask, a_sb, a_sc, a_sp, ACC)
    cp = load(c_prev, b, ch, p, mask, cp_sb, cp_sc, cp_sp, ACC)
    cn = load(c, b, ch, p, mask, c_sb, c_sc, c_sp, ACC)
    gh = load(dh, b, ch, p, mask, dh_sb, dh_sc, dh_sp, ACC)
    tc = tanh(cn)
    dzo = gh * tc * o * (1.0 - o)
    # c reaches the loss through grad_c, through tanh(c) in h and through oc * c in o
    dcn = (load(dc, b, ch, p, mask, dc_sb, dc_sc, dc_sp, ACC) + gh * o * (1.0 - tc * tc)
           + dzo * _pixel(oc, ch, p, P, mask, ACC))
    dzi, dzf, dzg, dcp = memory_update_backward(dcn, i, f, g, cp)
    dcp += dzi * _pixel(ct, ch, p, P, mask, ACC) + dzf * _pixel(ct, ch + C, p, P, mask, ACC)
    store(dz, dzi, b, ch, p, mask, dz_sb, dz_sc, dz_sp)
    store(dz, dzg, b, ch + C, p, mask, dz_sb, dz_sc, dz_sp)
    store(dz, dzf, b, ch + 2 * C, p, mask, dz_sb, dz_sc, dz_sp)
    store(dz, dzo, b, ch + 3 * C, p, mask, dz_sb, dz_sc, dz_sp)
    store(dc_prev, dcp, b, ch, p, mask, dcp_sb, dcp_sc, dcp_sp)


@triton.jit
def _block_forward_kernel(zx, zt, zs, m_prev, n_h, cm, o_partial, acts, C, P,
                          zx_sb, zx_sc, zx_sp, zt_sb, zt_sc, zt_sp, zs_sb, zs_sc, zs_sp,
                          mp_sb, mp_sc, mp_sp, nh_sb, nh_sc, nh_sp, cm_sb, cm_sc, cm_sp,
                          op_sb, op_sc, op_sp, a_sb, a_sc, a_sp,
                          FORGET: tl.constexpr, ACC: tl.constexpr,
                          BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    x_i = load(zx, b, ch, p, mask, zx_sb, zx_sc, zx_sp, ACC)
    x_g = load(zx, b, ch + C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
    x_f = load(zx, b, ch + 2 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
    x_o = load(zx, b, ch + 3 * C, p, mask, zx_sb, zx_sc, zx_sp, ACC)
    i_m, f_m, g_m, m = memory_update(
        x_i + load(zs, b, ch, p, mask, zs_sb, zs_sc, zs_sp, ACC),
        x_f + load(zs, b, ch + 2 * C, p, mask, zs_sb, zs_sc, zs_sp, ACC) + FORGET,
        x_g + load(zs, b, ch + C, p, mask, zs_sb, zs_sc, zs_sp, ACC),
        load(m_prev, b, ch, p, mask, mp_sb, mp_sc, mp_sp, ACC))
    i_c = sigmoid(x_i + load(zt, b, ch, p, mask, zt_sb, zt_sc, zt_sp, ACC))
    g_c = tanh(x_g + load(zt, b, ch + C, p, mask, zt_sb, zt_sc, zt_sp, ACC))
    c = load(n_h, b, ch, p, mask, nh_sb, nh_sc, nh_sp, ACC) + i_c * g_c
    store(cm, c, b, ch, p, mask, cm_sb, cm_sc, cm_sp)
    store(cm, m, b, ch + C, p, mask, cm_sb, cm_sc, cm_sp)
    store(o_partial, x_o + load(zt, b, ch + 2 * C, p, mask, zt_sb, zt_sc, zt_sp, ACC),
          b, ch, p, mask, op_sb, op_sc, op_sp)
    store(acts, i_c, b, ch, p, mask, a_sb, a_sc, a_sp)
    store(acts, g_c, b, ch + C, p, mask, a_sb, a_sc, a_sp)
    store(acts, i_m, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp)
    store(acts, f_m, b, ch + 3 * C, p, mask, a_sb, a_sc, a_sp)
    store(acts, g_m, b, ch + 4 * C, p, mask, a_sb, a_sc, a_sp)


@triton.jit
def _block_backward_kernel(gcm, gop, acts, m_prev, dzx, dzt, dzs, dm_prev, C, P,
                           gcm_sb, gcm_sc, gcm_sp, gop_sb, gop_sc, gop_sp, a_sb, a_sc, a_sp,
                           mp_sb, mp_sc, mp_sp, dx_sb, dx_sc, dx_sp, dt_sb, dt_sc, dt_sp,
                           ds_sb, ds_sc, ds_sp, dmp_sb, dmp_sc, dmp_sp,
                           ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    i_c = load(acts, b, ch, p, mask, a_sb, a_sc, a_sp, ACC)
    g_c = load(acts, b, ch + C, p, mask, a_sb, a_sc, a_sp, ACC)
    i_m = load(acts, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp, ACC)
    f_m = load(acts, b, ch + 3 * C, p, mask, a_sb, a_sc, a_sp, ACC)
    g_m = load(acts, b, ch + 4 * C, p, mask, a_sb, a_sc, a_sp, ACC)
    dc = load(gcm, b, ch, p, mask, gcm_sb, gcm_sc, gcm_sp, ACC)
    # c = n_h + i_c * g_c
    di_c = dc * g_c * i_c * (1.0 - i_c)
    dg_c = dc * i_c * (1.0 - g_c * g_c)
    di_m, df_m, dg_m, dmp = memory_update_backward(
        load(gcm, b, ch + C, p, mask, gcm_sb, gcm_sc, gcm_sp, ACC), i_m, f_m, g_m,
        load(m_prev, b, ch, p, mask, mp_sb, mp_sc, mp_sp, ACC))
    do = load(gop, b, ch, p, mask, gop_sb, gop_sc, gop_sp, ACC)
    # i_x and g_x feed both memories; f_x only m; zt only c; zs only m (o_s: the output gate)
    store(dzx, di_c + di_m, b, ch, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, dg_c + dg_m, b, ch + C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, df_m, b, ch + 2 * C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzx, do, b, ch + 3 * C, p, mask, dx_sb, dx_sc, dx_sp)
    store(dzt, di_c, b, ch, p, mask, dt_sb, dt_sc, dt_sp)
    store(dzt, dg_c, b, ch + C, p, mask, dt_sb, dt_sc, dt_sp)
    store(dzt, do, b, ch + 2 * C, p, mask, dt_sb, dt_sc, dt_sp)
    store(dzs, di_m, b, ch, p, mask, ds_sb, ds_sc, ds_sp)
    store(dzs, dg_m, b, ch + C, p, mask, ds_sb, ds_sc, ds_sp)
    store(dzs, df_m, b, ch + 2 * C, p, mask, ds_sb, ds_sc, ds_sp)
    store(dzs, tl.zeros((BLOCK_C, BLOCK_P), dtype=ACC), b, ch + 3 * C, p, mask, ds_sb, ds_sc, ds_sp)
    store(dm_prev, dmp, b, ch, p, mask, dmp_sb, dmp_sc, dmp_sp)


def mims_forward(launch, zh, zx, c_prev, ct_weight, oc_weight):
    """Returns ``(h, c, acts)``; the weights are contiguous (see fastcells.ops.mim_gates)."""
    C = c_prev.shape[1]
    outs = (new_like_layout(zh, C), new_like_layout(zh, C), new_like_layout(zh, 4 * C))
    launch_pointwise(launch, _mims_forward_kernel,
                     (zh, zx if zx is not None else zh, c_prev), outs, C,
                     extra=(ct_weight, oc_weight), HAS_X=zx is not None, FORGET=FORGET_BIAS,
                     ACC=acc_dtype(zh.dtype))
    return outs


def mims_backward(launch, grad_h, grad_c, acts, c_prev, c, ct_weight, oc_weight):
    """Returns ``(dz, dc_prev)``."""
    C = c_prev.shape[1]
    outs = (new_like_layout(acts, 4 * C), new_like_layout(acts, C))
    launch_pointwise(launch, _mims_backward_kernel, (grad_h, grad_c, acts, c_prev, c), outs, C,
                     extra=(ct_weight, oc_weight), ACC=acc_dtype(acts.dtype))
    return outs


def block_forward(launch, zx, zt, zs, m_prev, n_h):
    """Returns ``(cm, o_partial, acts)``."""
    C = m_prev.shape[1]
    outs = (new_like_layout(zx, 2 * C), new_like_layout(zx, C), new_like_layout(zx, 5 * C))
    launch_pointwise(launch, _block_forward_kernel, (zx, zt, zs, m_prev, n_h), outs, C,
                     FORGET=FORGET_BIAS, ACC=acc_dtype(zx.dtype))
    return outs


def block_backward(launch, grad_cm, grad_o_partial, acts, m_prev):
    """Returns ``(dzx, dzt, dzs, dm_prev)``."""
    C = m_prev.shape[1]
    outs = (new_like_layout(acts, 4 * C), new_like_layout(acts, 3 * C),
            new_like_layout(acts, 4 * C), new_like_layout(acts, C))
    launch_pointwise(launch, _block_backward_kernel, (grad_cm, grad_o_partial, acts, m_prev),
                     outs, C, ACC=acc_dtype(acts.dtype))
    return outs
