"""ConvLSTM step as one kernel: implicit-GEMM convolution over ``[x; h]`` with the gate math
(CELLS.md section 1) as its epilogue.

The pointwise path computes ``z = W * [x; h] + b`` (B, 4C, H, W) with a convolution, writes
z to global memory, and the gate kernel reads it back. Here z never leaves registers. The
convolution is a GEMM whose rows are the B*H*W output pixels and whose columns are the 4C
gate channels; a program owns BLOCK_P pixels x BLOCK_C hidden channels, i.e. the columns
of all four gates of those channels, and accumulates::

    acc[p, 4n + q] = sum over taps (ky, kx) and input channels k of
                     src[k, p shifted by (ky - K//2, kx - K//2)] * Wp[tap, k, 4n + q]

as ``tl.dot`` products of a [BLOCK_P, BLOCK_K] tile of shifted input pixels (zero outside
the image: "same" padding by masked loads) and a [BLOCK_K, 4 BLOCK_C] tile of the packed
weight. x and h are read separately, never concatenated; x is absent when the caller adds a
precomputed input projection ``zx`` (B, 4C, H, W) instead (the sequence layers compute it
for all frames at once). The epilogue splits the accumulator into the gates i, f, o, g,
adds the bias (or zx), applies the gate math of :mod:`.convlstm_gates` (forget_bias,
optional peepholes) and writes h, c and the activations ``acts = (i, f, o, g)`` that the
existing gate backward kernel reads. Per step that saves writing and reading z (4C planes)
and one launch.

``tl.dot`` needs every dimension >= 16: the packed weight is zero-padded to whole tiles
(channel counts like 5 or 20 work; the padded products add zeros), and the input loads are
masked to the real channels.

Backward is not here: the gate backward kernel of :mod:`.convlstm_gates` gives dz, and the
convolution's input/weight gradients are PyTorch's (cuDNN on GPUs; fastcells.ops.conv_gates).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastcells import _ext

from .convlstm_gates import acc_dtype, convlstm_epilogue
from .layout import flat_strides, load, new_like_layout


@triton.jit
def _forward_kernel(x, h, c_prev, wp, bias, zx, peep, h_out, c_out, acts,
                    Cin, C, H, W, BP, RX, RH, NW,
                    x_sb, x_sc, x_sp, h_sb, h_sc, h_sp, cp_sb, cp_sc, cp_sp,
                    zx_sb, zx_sc, zx_sp, ho_sb, ho_sc, ho_sp, co_sb, co_sc, co_sp,
                    a_sb, a_sc, a_sp, forget_bias,
                    K: tl.constexpr, HAS_X: tl.constexpr, HAS_BIAS: tl.constexpr,
                    HAS_ZX: tl.constexpr, HAS_PEEP: tl.constexpr, ACC: tl.constexpr,
                    DOT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_P: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_KX: tl.constexpr, BLOCK_KH: tl.constexpr):
    # GEMM rows are the B*H*W output pixels (batch folded in, so small frames still fill
    # tiles); columns are 4 * BLOCK_C packed weight columns, 4n + gate for hidden channel n.
    P = H * W
    q = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    qmask = q < BP
    b = (q // P).to(tl.int64)
    p = q % P
    py = p // W
    px = p - py * W
    cols = (tl.program_id(1) * 4 * BLOCK_C + tl.arange(0, 4 * BLOCK_C))[None, :]
    kx = tl.arange(0, BLOCK_KX)
    kh = tl.arange(0, BLOCK_KH)
    # Loop-invariant parts of the addresses: [BLOCK_P, BLOCK_K] input tiles at the output
    # pixel, [BLOCK_K, 4 * BLOCK_C] weight tiles at row 0 of x's and of h's packed rows.
    x_tile = x + (b * x_sb)[:, None] + kx[None, :] * x_sc
    h_tile = h + (b * h_sb)[:, None] + kh[None, :] * h_sc
    # Weight offsets stay int32 (a pointer tile of 64-bit addresses costs twice the
    # registers, and registers are what bound the tile size here).
    wx_off = kx[:, None] * NW + cols
    wh_off = kh[:, None] * NW + cols

    acc = tl.zeros((BLOCK_P, 4 * BLOCK_C), dtype=ACC)
    for ky in range(K):
        yy = py + (ky - K // 2)
        row_inside = qmask & (yy >= 0) & (yy < H)
        for kx_ in range(K):
            xx = px + (kx_ - K // 2)
            # Source pixels of this tap; outside the image they read as zero ("same" pad).
            inside = (row_inside & (xx >= 0) & (xx < W))[:, None]
            shift = (p + (ky - K // 2) * W + (kx_ - K // 2))[:, None]
            # Packed rows: x's channels, then h's from RX on, both zero-padded to whole
            # chunks (and columns to whole channel blocks): weight tiles load without masks.
            w_row = (ky * K + kx_) * (RX + RH) * NW
            if HAS_X:
                x_tap = x_tile + shift * x_sp
                for k0 in range(0, RX, BLOCK_KX):
                    a = tl.load(x_tap + k0 * x_sc, mask=inside & (kx[None, :] < Cin - k0),
                                other=0.0)
                    wt = tl.load(wp + (w_row + k0 * NW) + wx_off)
                    acc = tl.dot(a.to(DOT), wt.to(DOT), acc, input_precision=PRECISION,
                                 out_dtype=ACC)
            h_tap = h_tile + shift * h_sp
            for k0 in range(0, RH, BLOCK_KH):
                a = tl.load(h_tap + k0 * h_sc, mask=inside & (kh[None, :] < C - k0), other=0.0)
                wt = tl.load(wp + (w_row + (RX + k0) * NW) + wh_off)
                acc = tl.dot(a.to(DOT), wt.to(DOT), acc, input_precision=PRECISION,
                             out_dtype=ACC)

    # Column 4n + 2*q1 + q0 holds gate q = 2*q1 + q0 (order i, f, o, g) of channel n.
    even, odd = tl.split(tl.reshape(acc, (BLOCK_P, BLOCK_C, 2, 2)))  # q0 = 0, 1
    zi, zo = tl.split(even)
    zf, zg = tl.split(odd)

    # Epilogue: the gate math of convlstm_gates (convlstm_epilogue) on the register tile.
    n = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    nmask = n < C
    pp = p[:, None]
    b = b[:, None]
    mask = qmask[:, None] & nmask
    if HAS_BIAS:
        zi += tl.load(bias + n, mask=nmask, other=0.0).to(ACC)
        zf += tl.load(bias + C + n, mask=nmask, other=0.0).to(ACC)
        zo += tl.load(bias + 2 * C + n, mask=nmask, other=0.0).to(ACC)
        zg += tl.load(bias + 3 * C + n, mask=nmask, other=0.0).to(ACC)
    if HAS_ZX:
        zi += load(zx, b, n, pp, mask, zx_sb, zx_sc, zx_sp, ACC)
        zf += load(zx, b, n + C, pp, mask, zx_sb, zx_sc, zx_sp, ACC)
        zo += load(zx, b, n + 2 * C, pp, mask, zx_sb, zx_sc, zx_sp, ACC)
        zg += load(zx, b, n + 3 * C, pp, mask, zx_sb, zx_sc, zx_sp, ACC)
    zf += forget_bias
    cp = load(c_prev, b, n, pp, mask, cp_sb, cp_sc, cp_sp, ACC)
    convlstm_epilogue(zi, zf, zo, zg, cp, peep, h_out, c_out, acts, b, n, pp, mask, C,
                      ho_sb, ho_sc, ho_sp, co_sb, co_sc, co_sp, a_sb, a_sc, a_sp, HAS_PEEP, ACC)


def _round_up(n: int, block: int) -> int:
    return triton.cdiv(n, block) * block


def pack_weight(weight: torch.Tensor, cin: int, meta: dict) -> torch.Tensor:
    """(4C, Cin + C, K, K) -> (K*K, RX + RH, 4 * Cpad): per tap, the GEMM's B operand.

    Rows: x's Cin channels zero-padded to RX (a multiple of BLOCK_KX; 0 without x), then h's
    C channels padded to RH (a multiple of BLOCK_KH). Columns: ``4 n + gate`` for hidden
    channel n < Cpad (C padded to a multiple of BLOCK_C), so a program's four gates are one
    contiguous [BLOCK_K, 4 * BLOCK_C] tile and one ``tl.dot``. Padding is zeros: padded
    products add nothing, and the loads need no masks. Weights are small (a copy of at most
    a few hundred KB per call). Returns ``(packed, RX, RH)``."""
    four_c, _, k, _ = weight.shape
    C = four_c // 4
    rx = _round_up(cin, meta["BLOCK_KX"]) if cin else 0
    rh = _round_up(C, meta["BLOCK_KH"])
    cpad = _round_up(C, meta["BLOCK_C"])
    # (4, C, Cin + C, K, K) -> (K, K, Cin + C, C, 4): taps, rows, channel, gate
    w = weight.view(4, C, cin + C, k, k).permute(3, 4, 2, 1, 0).reshape(k * k, cin + C, C, 4)
    packed = weight.new_zeros((k * k, rx + rh, cpad, 4))
    packed[:, :cin, :C] = w[:, :cin]
    packed[:, rx:rx + C, :C] = w[:, cin:]
    return packed.view(k * k, rx + rh, 4 * cpad), rx, rh


def _block(n: int, lo: int, hi: int) -> int:
    return max(lo, min(triton.next_power_of_2(max(n, 1)), hi))


def tile_sizes(cin: int, hidden: int, pixels: int, dtype: torch.dtype) -> dict:
    """Tile sizes and warps for B*H*W = ``pixels`` output pixels.

    Channels: all of a 16-64-channel cell in one tile, so every program reads each input
    tile once per tap; >= 16 everywhere for ``tl.dot``. Pixels and warps: chosen so that the
    kernel compiles for sm_90 without register spills (cuobjdump -res-usage of every dtype at
    C = 16, 32, 64; the accumulator is BLOCK_P x 4 BLOCK_C float32 and 4-8 byte operands take
    twice the registers of 2-byte ones). Not timed on a GPU yet (benchmarks/NOTES.md).
    The interpreter costs per program and per operation, not per element, so there the
    pixel tiles are larger (the tests then run in seconds); the masks are the same.
    """
    block_c = _block(hidden, 16, 64)
    wide = dtype.itemsize >= 4
    if _ext.triton_interpreted():
        block_p = _block(pixels, 16, 256)
    else:
        block_p = 32 if wide and block_c >= 64 else 64
    num_warps = 8 if block_c >= 64 or (wide and block_c >= 32) or dtype.itemsize == 8 else 4
    return dict(BLOCK_P=block_p, BLOCK_C=block_c, BLOCK_KX=_block(cin, 16, 32),
                BLOCK_KH=_block(hidden, 16, 32), num_warps=num_warps)


def dot_dtype(dtype: torch.dtype):
    """Operand dtype of ``tl.dot``: the tensors' own (tensor cores take fp16/bf16 and
    accumulate in float32). The interpreter multiplies bf16 as the raw uint16 bits it stores
    them in, so there bf16 operands go up to float32 first, which is exact (and so are the
    products of two bf16 values in float32): the same sums as the GPU's bf16 dot."""
    if dtype == torch.bfloat16 and _ext.triton_interpreted():
        return tl.float32
    return {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
            torch.float64: tl.float64}[dtype]


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: float32 follows ``torch.backends.cudnn.allow_tf32``, the
    switch of the eager convolution this kernel replaces (TF32 by default on GPUs that have
    it); the other dtypes multiply exactly in their own precision."""
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


def forward(launch, x, h, c_prev, weight, bias, zx, peephole, forget_bias: float):
    """One fused ConvLSTM step.

    Args:
        x: (B, Cin, H, W) or None (then ``zx`` is given and ``weight`` has C input channels).
        h, c_prev: (B, C, H, W).
        weight: (4C, Cin + C, K, K), K odd; gate order i, f, o, g along dim 0.
        bias: (4C,) or None.  zx: (B, 4C, H, W) or None, added to z (x's projection).
        peephole: (3, C) contiguous or None.
    Returns ``(h, c, acts)``: (B, C, H, W), (B, C, H, W), (B, 4C, H, W) in ``h``'s memory
    format. ``launch`` wraps the kernel (see fastcells.ops._triton).
    """
    B, C, H, W = h.shape
    K = weight.shape[-1]
    cin = x.shape[1] if x is not None else 0
    outs = (new_like_layout(h, C), new_like_layout(h, C), new_like_layout(h, 4 * C))
    ins = [flat_strides(t) if t is not None else (h, (0, 0, 0)) for t in (x, h, c_prev, zx)]
    meta = tile_sizes(cin, C, B * H * W, h.dtype)
    wp, rx, rh = pack_weight(weight, cin, meta)
    grid = (triton.cdiv(B * H * W, meta["BLOCK_P"]), triton.cdiv(C, meta["BLOCK_C"]))
    launch(_forward_kernel)[grid](
        *(t for t, _ in ins[:3]), wp, bias if bias is not None else weight, ins[3][0],
        peephole if peephole is not None else weight, *outs,
        cin, C, H, W, B * H * W, rx, rh, wp.shape[2],
        *(s for _, ss in ins[:3] for s in ss), *ins[3][1],
        *(s for t in outs for s in flat_strides(t)[1]), float(forget_bias),
        K=K, HAS_X=x is not None, HAS_BIAS=bias is not None, HAS_ZX=zx is not None,
        HAS_PEEP=peephole is not None, ACC=acc_dtype(h.dtype), DOT=dot_dtype(h.dtype),
        PRECISION=dot_precision(h.dtype), **meta)
    return outs
