"""ConvLSTM gate kernels (CELLS.md section 1; also Conv-TT-LSTM's gate stage).

Forward reads z (4C) and c_prev once and writes h, c and the gate activations
``acts = (i, f, o, g)`` (4C), which backward reads instead of recomputing them. With
peepholes the per-channel weights (3, C) are read per tile; their gradient is reduced per
program into a (programs, 3, C) float32 buffer summed on the host side, deterministic
(no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .layout import (block_sizes, launch_grid, launch_pointwise, load, new_like_layout, store,
                     tile_offsets)
from .lstm_math import memory_update, memory_update_backward, sigmoid, tanh


@triton.jit
def _forward_kernel(z, c_prev, h, c_out, acts, C, P,
                    z_sb, z_sc, z_sp, cp_sb, cp_sc, cp_sp, h_sb, h_sc, h_sp,
                    c_sb, c_sc, c_sp, a_sb, a_sc, a_sp, peep, forget_bias,
                    HAS_PEEP: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    zi = load(z, b, ch, p, mask, z_sb, z_sc, z_sp, ACC)
    zf = load(z, b, ch + C, p, mask, z_sb, z_sc, z_sp, ACC) + forget_bias
    zo = load(z, b, ch + 2 * C, p, mask, z_sb, z_sc, z_sp, ACC)
    zg = load(z, b, ch + 3 * C, p, mask, z_sb, z_sc, z_sp, ACC)
    cp = load(c_prev, b, ch, p, mask, cp_sb, cp_sc, cp_sp, ACC)
    convlstm_epilogue(zi, zf, zo, zg, cp, peep, h, c_out, acts, b, ch, p, mask, C,
                      h_sb, h_sc, h_sp, c_sb, c_sc, c_sp, a_sb, a_sc, a_sp, HAS_PEEP, ACC)


@triton.jit
def convlstm_epilogue(zi, zf, zo, zg, cp, peep, h, c_out, acts, b, ch, p, mask, C,
                      h_sb, h_sc, h_sp, c_sb, c_sc, c_sp, a_sb, a_sc, a_sp,
                      HAS_PEEP: tl.constexpr, ACC: tl.constexpr):
    """The ConvLSTM update of a tile from its pre-activations (forget bias included):
    peepholes, memory, output gate, and the stores of h, c and ``acts = (i, f, o, g)``.
    Shared by this kernel and the fused convolution's epilogue (kernels/conv_gates.py)."""
    if HAS_PEEP:
        cmask = ch < C
        zi += tl.load(peep + ch, mask=cmask, other=0.0).to(ACC) * cp
        zf += tl.load(peep + C + ch, mask=cmask, other=0.0).to(ACC) * cp
    i, f, g, c = memory_update(zi, zf, zg, cp)
    if HAS_PEEP:
        zo += tl.load(peep + 2 * C + ch, mask=ch < C, other=0.0).to(ACC) * c
    o = sigmoid(zo)
    store(h, o * tanh(c), b, ch, p, mask, h_sb, h_sc, h_sp)
    store(c_out, c, b, ch, p, mask, c_sb, c_sc, c_sp)
    store(acts, i, b, ch, p, mask, a_sb, a_sc, a_sp)
    store(acts, f, b, ch + C, p, mask, a_sb, a_sc, a_sp)
    store(acts, o, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp)
    store(acts, g, b, ch + 3 * C, p, mask, a_sb, a_sc, a_sp)


@triton.jit
def _backward_kernel(dh, dc, acts, c_prev, c, dz, dc_prev, C, P,
                     dh_sb, dh_sc, dh_sp, dc_sb, dc_sc, dc_sp, a_sb, a_sc, a_sp,
                     cp_sb, cp_sc, cp_sp, c_sb, c_sc, c_sp, dz_sb, dz_sc, dz_sp,
                     dcp_sb, dcp_sc, dcp_sp, peep, dpeep,
                     HAS_PEEP: tl.constexpr, ACC: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    ch, p, mask, b = tile_offsets(C, P, BLOCK_C, BLOCK_P)
    i = load(acts, b, ch, p, mask, a_sb, a_sc, a_sp, ACC)
    f = load(acts, b, ch + C, p, mask, a_sb, a_sc, a_sp, ACC)
    o = load(acts, b, ch + 2 * C, p, mask, a_sb, a_sc, a_sp, ACC)
    g = load(acts, b, ch + 3 * C, p, mask, a_sb, a_sc, a_sp, ACC)
    cp = load(c_prev, b, ch, p, mask, cp_sb, cp_sc, cp_sp, ACC)
    cn = load(c, b, ch, p, mask, c_sb, c_sc, c_sp, ACC)
    gh = load(dh, b, ch, p, mask, dh_sb, dh_sc, dh_sp, ACC)
    tc = tanh(cn)
    dzo = gh * tc * o * (1.0 - o)
    dcn = load(dc, b, ch, p, mask, dc_sb, dc_sc, dc_sp, ACC) + gh * o * (1.0 - tc * tc)
    if HAS_PEEP:
        dcn += dzo * tl.load(peep + 2 * C + ch, mask=ch < C, other=0.0).to(ACC)
    dzi, dzf, dzg, dcp = memory_update_backward(dcn, i, f, g, cp)
    if HAS_PEEP:
        cmask = ch < C
        dcp += (dzi * tl.load(peep + ch, mask=cmask, other=0.0).to(ACC)
                + dzf * tl.load(peep + C + ch, mask=cmask, other=0.0).to(ACC))
        # Partial sums over this tile's positions: one row per (batch, position block),
        # which the channel blocks fill together (masked positions hold zeros).
        row = (b * tl.num_programs(0) + tl.program_id(0)) * 3 * C
        cvec = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cm = cvec < C
        out_ty = dpeep.dtype.element_ty
        tl.store(dpeep + row + cvec, tl.sum(dzi * cp, axis=1).to(out_ty), mask=cm)
        tl.store(dpeep + row + C + cvec, tl.sum(dzf * cp, axis=1).to(out_ty), mask=cm)
        tl.store(dpeep + row + 2 * C + cvec, tl.sum(dzo * cn, axis=1).to(out_ty), mask=cm)
    store(dz, dzi, b, ch, p, mask, dz_sb, dz_sc, dz_sp)
    store(dz, dzf, b, ch + C, p, mask, dz_sb, dz_sc, dz_sp)
    store(dz, dzo, b, ch + 2 * C, p, mask, dz_sb, dz_sc, dz_sp)
    store(dz, dzg, b, ch + 3 * C, p, mask, dz_sb, dz_sc, dz_sp)
    store(dc_prev, dcp, b, ch, p, mask, dcp_sb, dcp_sc, dcp_sp)


def acc_dtype(dtype: torch.dtype):
    """Accumulation dtype of a kernel: float64 for float64 tensors, else float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def forward(launch, z, c_prev, peephole, forget_bias: float):
    """Returns ``(h, c, acts)``. ``launch`` wraps the kernel (see fastcells.ops._triton)."""
    C = c_prev.shape[1]
    outs = (new_like_layout(z, C), new_like_layout(z, C), new_like_layout(z, 4 * C))
    launch_pointwise(launch, _forward_kernel, (z, c_prev), outs, C,
                     extra=(peephole if peephole is not None else z, float(forget_bias)),
                     HAS_PEEP=peephole is not None, ACC=acc_dtype(z.dtype))
    return outs


def backward(launch, grad_h, grad_c, acts, c_prev, c, peephole):
    """Returns ``(dz, dc_prev, dpeephole or an empty tensor)``."""
    B, C, H, W = c_prev.shape
    outs = (new_like_layout(acts, 4 * C), new_like_layout(acts, C))
    has_peep = peephole is not None
    # Peephole gradient partial sums, one row per (batch, position block), every element
    # written (deterministic, no atomics); summed here.
    rows = B * launch_grid(B, C, H * W, *block_sizes(C, H * W))[0]
    partial = torch.empty((rows if has_peep else 1, 3 * C),
                          dtype=torch.float64 if acts.dtype == torch.float64 else torch.float32,
                          device=acts.device)
    launch_pointwise(launch, _backward_kernel, (grad_h, grad_c, acts, c_prev, c), outs, C,
                     extra=(peephole if has_peep else acts, partial),
                     HAS_PEEP=has_peep, ACC=acc_dtype(acts.dtype))
    dpeep = partial.sum(0).view(3, C).to(peephole.dtype) if has_peep else acts.new_empty(0)
    return (*outs, dpeep)
