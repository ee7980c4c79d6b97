"""The Conv-TT-LSTM CTT recurrence (CELLS.md section 4) as Triton kernels.

One level of the chain is

    v_l = sum_d conv(h[l + d]; P_l[..., d]) + b_P + conv(v_{l-1}; G_{l-1}) + b_G

("same" padding, odd K, stride 1), with ``h`` the history in logical order (oldest first):
the D window states are D separate tensors, read where they lie, never concatenated.

Every convolution here is one *multi-source* kernel, :func:`_conv_sum_kernel`: an implicit
GEMM whose program owns an output tile [BLOCK_P positions x BLOCK_CO channels] in
registers and accumulates, over sources and chunks of the flattened reduction index
r = tap * Cin + channel, ``tl.dot(X[BLOCK_P, BLOCK_R], W[BLOCK_R, BLOCK_CO])`` with masked
(zero) halo loads. The tile then gets the biases added and is written once. Each source is
a (tensor, weight) pair with its own strides, so the D history states (in any layout:
contiguous, channels_last, channel slices, other strides) and v_{l-1} are read in place,
each once per level (its K*K shifted reads hit the cache), and v_l is written once.

Why a fixed number of source pointers (``MAX_SOURCES``): a Triton kernel has a fixed
signature. Pointers relative to one base tensor would work on a GPU but hide the other
tensors from ``torch.compile`` (``wrap_triton`` sees only the arguments it is given, so it
could reorder or free them); one launch per window state would re-read and re-write an
accumulator D times. Four pointers cover the default configuration (D = 1, plus v_{l-1})
and D <= 3 in one launch; a level with more sources runs as several launches that carry
the partial sum in a float32 scratch (``READ_ACC``), the only case where an accumulator
leaves registers.

The same kernel serves the backward's data gradients with ``FLIP``: the gradient of a
convolution's input is the convolution of its output gradient with the weight transposed
(a stride view, no copy) and flipped (the kernel indexes taps K-1-kh, K-1-kw). The window
state h_j appears in up to min(N, D) levels, so its gradient is one launch over those
levels' output gradients, written once.

Weight and bias gradients (:func:`_wgrad_kernel`) are reductions over batch and positions,
a GEMM ``dW[o, (tap, i)] = g^T[o, p] @ X_shifted[p, (tap, i)]``: each program (position
chunk, block of (tap, channel) columns, batch) accumulates over its chunk and writes its
own partial row; the host sums the rows (deterministic, no atomics). Every partial element
is written (the columns past a source's K*K*Cin as zeros), so NaN poisoning catches a
program that skipped its work.

Interpreter workarounds (``INTERP_BF16``: bfloat16 tensors under ``TRITON_INTERPRET=1``;
compiled GPU code is unaffected): the interpreter multiplies bfloat16 tiles in ``tl.dot``
as their raw uint16 bits, so the tiles go through float32 first (exact: the products of a
bfloat16 MMA are exact and accumulate in float32), and its float32 -> bfloat16 cast
truncates, so the output is rounded to nearest even by hand.

What is not fused (see benchmarks/NOTES.md): the levels are separate launches, v_l goes
through global memory between them (R channels: small and L2-resident at these sizes).
Keeping v_{l-1} on chip for level l would need its K//2 halo recomputed per level, and
Triton cannot index a register tile at shifted positions, so that recomputation would
redo level l-1's whole tap loop per tap of level l.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastcells import _ext

from .layout import POISON, new_like_layout

MAX_SOURCES = 4


# ------------------------------------------------------------------------------ kernels
@triton.jit
def _round_bf16(x):
    """float32 -> bfloat16 rounded to nearest even, as ``.to(tl.bfloat16)`` does on a GPU.
    Used in the interpreter only, whose ``.to`` truncates to bfloat16 (twice the error)
    and whose round-to-nearest option loses the carry into odd exponents."""
    bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
    bits = bits + (0x7FFF + ((bits >> 16) & 1))
    return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _conv_source(acc, x, sb, sc, sh, sw, cin, w, wso, wsi, wsh, wsw, b, ph, pw, pmask, co,
                 H, W, COUT, K: tl.constexpr, FLIP: tl.constexpr, ACC: tl.constexpr,
                 PREC: tl.constexpr, INTERP_BF16: tl.constexpr, BLOCK_R: tl.constexpr):
    """acc[p, o] += sum_{tap, i} x[b, i, p + tap - K//2] * w[o, i, tap] (w flipped if FLIP).

    The reduction runs over the flattened index r = tap * cin + i (K*K*cin of them) in
    chunks of BLOCK_R: with few channels (R = 8, or C = 3..8) one MMA covers several taps
    instead of padding each tap's channels to the MMA's minimum of 16, and the interpreter
    runs K*K*cin / BLOCK_R iterations rather than K*K. ``ph``, ``pw``, ``co`` are int64: the
    address arithmetic is 64-bit (large tensors), and the interpreter's overflow checks of
    32-bit arithmetic (several numpy ops per operation) stay out of the loop."""
    xb = x + b * sb
    wco = w + co[None, :] * wso  # [1, BLOCK_CO] pointers
    comask = (co < COUT)[None, :]
    n_red = K * K * cin
    for r0 in range(0, n_red, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R).to(tl.int64)
        rmask = r < n_red
        tap = r // cin
        ci = r - tap * cin
        th = tap // K
        tw = tap - th * K
        hh = ph[:, None] + (th - K // 2)[None, :]  # [BLOCK_P, BLOCK_R]
        ww = pw[:, None] + (tw - K // 2)[None, :]
        valid = pmask[:, None] & rmask[None, :] & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        a = tl.load(xb + hh * sh + ww * sw + (ci * sc)[None, :], mask=valid, other=0.0)
        if FLIP:
            th = K - 1 - th
            tw = K - 1 - tw
        wt = tl.load(wco + (ci * wsi + th * wsh + tw * wsw)[:, None],
                     mask=rmask[:, None] & comask, other=0.0)  # [BLOCK_R, BLOCK_CO]
        if INTERP_BF16:  # bfloat16 in the interpreter: module docstring
            a = a.to(tl.float32)
            wt = wt.to(tl.float32)
        acc = tl.dot(a, wt, acc, input_precision=PREC, out_dtype=ACC)
    return acc


@triton.jit
def _conv_sum_kernel(
        out, acc_in, bias0, bias1, x0, x1, x2, x3, w0, w1, w2, w3, H, W, COUT,
        o_sb, o_sc, o_sh, o_sw,
        x0_sb, x0_sc, x0_sh, x0_sw, c0, w0_so, w0_si, w0_sh, w0_sw,
        x1_sb, x1_sc, x1_sh, x1_sw, c1, w1_so, w1_si, w1_sh, w1_sw,
        x2_sb, x2_sc, x2_sh, x2_sw, c2, w2_so, w2_si, w2_sh, w2_sw,
        x3_sb, x3_sc, x3_sh, x3_sw, c3, w3_so, w3_si, w3_sh, w3_sw,
        NUM_SRC: tl.constexpr, K: tl.constexpr, FLIP: tl.constexpr,
        HAS_BIAS0: tl.constexpr, HAS_BIAS1: tl.constexpr, READ_ACC: tl.constexpr,
        ACC: tl.constexpr, PREC: tl.constexpr, INTERP_BF16: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_CO: tl.constexpr):
    """out[b, o] = sum_s conv(x_s[b]; w_s)[o] (+ acc_in[b, o]) (+ bias0[o]) (+ bias1[o]).

    Grid (position blocks, output-channel blocks, batch). ``acc_in`` is a contiguous
    (B, COUT, H*W) float scratch holding the sum of earlier launches' sources."""
    P = H * W
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    co = tl.program_id(1).to(tl.int64) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    b = tl.program_id(2).to(tl.int64)
    pmask = p < P
    ph = p // W
    pw = p % W
    acc = tl.zeros((BLOCK_P, BLOCK_CO), ACC)
    acc = _conv_source(acc, x0, x0_sb, x0_sc, x0_sh, x0_sw, c0, w0, w0_so, w0_si, w0_sh,
                       w0_sw, b, ph, pw, pmask, co, H, W, COUT, K, FLIP, ACC, PREC, INTERP_BF16,
                       BLOCK_R)
    if NUM_SRC > 1:
        acc = _conv_source(acc, x1, x1_sb, x1_sc, x1_sh, x1_sw, c1, w1, w1_so, w1_si, w1_sh,
                           w1_sw, b, ph, pw, pmask, co, H, W, COUT, K, FLIP, ACC, PREC,
                           INTERP_BF16, BLOCK_R)
    if NUM_SRC > 2:
        acc = _conv_source(acc, x2, x2_sb, x2_sc, x2_sh, x2_sw, c2, w2, w2_so, w2_si, w2_sh,
                           w2_sw, b, ph, pw, pmask, co, H, W, COUT, K, FLIP, ACC, PREC,
                           INTERP_BF16, BLOCK_R)
    if NUM_SRC > 3:
        acc = _conv_source(acc, x3, x3_sb, x3_sc, x3_sh, x3_sw, c3, w3, w3_so, w3_si, w3_sh,
                           w3_sw, b, ph, pw, pmask, co, H, W, COUT, K, FLIP, ACC, PREC,
                           INTERP_BF16, BLOCK_R)
    omask = pmask[:, None] & (co < COUT)[None, :]
    if READ_ACC:
        acc += tl.load(acc_in + (b * COUT + co[None, :]) * P + p[:, None], mask=omask,
                       other=0.0).to(ACC)
    if HAS_BIAS0:
        acc += tl.load(bias0 + co, mask=co < COUT, other=0.0).to(ACC)[None, :]
    if HAS_BIAS1:
        acc += tl.load(bias1 + co, mask=co < COUT, other=0.0).to(ACC)[None, :]
    dst = out + b * o_sb + co[None, :] * o_sc + ph[:, None] * o_sh + pw[:, None] * o_sw
    if INTERP_BF16:
        tl.store(dst, _round_bf16(acc), mask=omask)
    else:
        tl.store(dst, acc.to(out.dtype.element_ty), mask=omask)


@triton.jit
def _wgrad_kernel(
        part, bias_part, g, x0, x1, x2, x3, H, W, COUT, NCOL, ITERS, N_CHUNKS,
        g_sb, g_sc, g_sh, g_sw,
        x0_sb, x0_sc, x0_sh, x0_sw, c0, x1_sb, x1_sc, x1_sh, x1_sw, c1,
        x2_sb, x2_sc, x2_sh, x2_sw, c2, x3_sb, x3_sc, x3_sh, x3_sw, c3,
        pt_row, pt_src, pt_o,
        NUM_SRC: tl.constexpr, K: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
        PREC: tl.constexpr, INTERP_BF16: tl.constexpr, BLOCK_P: tl.constexpr,
        BLOCK_O: tl.constexpr, BLOCK_T: tl.constexpr):
    """Partial weight gradients as a GEMM over the flattened columns col = tap * Cin_s + i:
    part[row, s, o, col] = sum over the row's positions p of g[b, o, p] * x_s[b, i, p +
    tap - K//2] for col < K*K*Cin_s and 0 up to NCOL, row = b * N_CHUNKS + chunk;
    bias_part[row, o] = sum of g[b, o, p] over the row's positions (column block 0).

    Grid (position chunks of ITERS * BLOCK_P, column blocks of BLOCK_T, batch). Per
    position block the g tile is loaded once for all sources (one accumulator per source,
    NUM_SRC <= 4 unrolled at compile time); the source blocks are inlined rather than a
    helper because the interpreter pays a fixed cost per helper call."""
    chunk = tl.program_id(0).to(tl.int64)
    cb = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    row = b * N_CHUNKS + chunk
    P = H * W
    col = cb * BLOCK_T + tl.arange(0, BLOCK_T).to(tl.int64)
    # Per source: the column's tap offset (dh, dw), channel offset and validity.
    t0 = col // c0
    dh0 = (t0 // K - K // 2)[None, :]
    dw0 = (t0 % K - K // 2)[None, :]
    xc0 = x0 + b * x0_sb + ((col - t0 * c0) * x0_sc)[None, :]
    cv0 = (col < K * K * c0)[None, :]
    if NUM_SRC > 1:
        t1 = col // c1
        dh1 = (t1 // K - K // 2)[None, :]
        dw1 = (t1 % K - K // 2)[None, :]
        xc1 = x1 + b * x1_sb + ((col - t1 * c1) * x1_sc)[None, :]
        cv1 = (col < K * K * c1)[None, :]
    if NUM_SRC > 2:
        t2 = col // c2
        dh2 = (t2 // K - K // 2)[None, :]
        dw2 = (t2 % K - K // 2)[None, :]
        xc2 = x2 + b * x2_sb + ((col - t2 * c2) * x2_sc)[None, :]
        cv2 = (col < K * K * c2)[None, :]
    if NUM_SRC > 3:
        t3 = col // c3
        dh3 = (t3 // K - K // 2)[None, :]
        dw3 = (t3 % K - K // 2)[None, :]
        xc3 = x3 + b * x3_sb + ((col - t3 * c3) * x3_sc)[None, :]
        cv3 = (col < K * K * c3)[None, :]
    dst = part + row * pt_row
    for o0 in range(0, COUT, BLOCK_O):
        o = o0 + tl.arange(0, BLOCK_O).to(tl.int64)
        omask = o < COUT
        go = g + b * g_sb + o[:, None] * g_sc  # [BLOCK_O, 1]
        acc0 = tl.zeros((BLOCK_O, BLOCK_T), ACC)
        acc1 = tl.zeros((BLOCK_O, BLOCK_T), ACC)
        acc2 = tl.zeros((BLOCK_O, BLOCK_T), ACC)
        acc3 = tl.zeros((BLOCK_O, BLOCK_T), ACC)
        for it in range(ITERS):
            p = (chunk * ITERS + it) * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
            pmask = p < P
            ph = (p // W)[:, None]
            pw = (p % W)[:, None]
            gt = tl.load(go + (ph * g_sh + pw * g_sw).reshape(1, BLOCK_P),
                         mask=omask[:, None] & pmask[None, :], other=0.0)
            if INTERP_BF16:  # bfloat16 in the interpreter: module docstring
                gt = gt.to(tl.float32)
            pm = pmask[:, None]
            hh = ph + dh0
            ww = pw + dw0
            xt = tl.load(xc0 + hh * x0_sh + ww * x0_sw,
                         mask=pm & cv0 & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W), other=0.0)
            if INTERP_BF16:
                xt = xt.to(tl.float32)
            acc0 = tl.dot(gt, xt, acc0, input_precision=PREC, out_dtype=ACC)
            if NUM_SRC > 1:
                hh = ph + dh1
                ww = pw + dw1
                xt = tl.load(xc1 + hh * x1_sh + ww * x1_sw,
                             mask=pm & cv1 & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W),
                             other=0.0)
                if INTERP_BF16:
                    xt = xt.to(tl.float32)
                acc1 = tl.dot(gt, xt, acc1, input_precision=PREC, out_dtype=ACC)
            if NUM_SRC > 2:
                hh = ph + dh2
                ww = pw + dw2
                xt = tl.load(xc2 + hh * x2_sh + ww * x2_sw,
                             mask=pm & cv2 & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W),
                             other=0.0)
                if INTERP_BF16:
                    xt = xt.to(tl.float32)
                acc2 = tl.dot(gt, xt, acc2, input_precision=PREC, out_dtype=ACC)
            if NUM_SRC > 3:
                hh = ph + dh3
                ww = pw + dw3
                xt = tl.load(xc3 + hh * x3_sh + ww * x3_sw,
                             mask=pm & cv3 & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W),
                             other=0.0)
                if INTERP_BF16:
                    xt = xt.to(tl.float32)
                acc3 = tl.dot(gt, xt, acc3, input_precision=PREC, out_dtype=ACC)
        offs = o[:, None] * pt_o + col[None, :]
        smask = omask[:, None] & (col < NCOL)[None, :]
        tl.store(dst + offs, acc0, mask=smask)
        if NUM_SRC > 1:
            tl.store(dst + pt_src + offs, acc1, mask=smask)
        if NUM_SRC > 2:
            tl.store(dst + 2 * pt_src + offs, acc2, mask=smask)
        if NUM_SRC > 3:
            tl.store(dst + 3 * pt_src + offs, acc3, mask=smask)
    if HAS_BIAS:
        if cb == 0:
            for o0 in range(0, COUT, BLOCK_O):
                o = o0 + tl.arange(0, BLOCK_O).to(tl.int64)
                omask = o < COUT
                go = g + b * g_sb + o[:, None] * g_sc
                s = tl.zeros((BLOCK_O,), ACC)
                for it in range(ITERS):
                    p = (chunk * ITERS + it) * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
                    gt = tl.load(go + ((p // W) * g_sh + (p % W) * g_sw)[None, :],
                                 mask=omask[:, None] & (p < P)[None, :], other=0.0)
                    s += tl.sum(gt.to(ACC), axis=1)
                tl.store(bias_part + row * COUT + o, s, mask=omask)


# ---------------------------------------------------------------------------- launchers
def _acc(dtype: torch.dtype):
    """(Triton accumulation dtype, torch dtype of partial sums): float64 for float64."""
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def _precision(dtype: torch.dtype) -> str:
    # float32 follows PyTorch's convolution setting (TF32 on by default for cuDNN), as the
    # eager convolutions this replaces would; the 16-bit and float64 MMAs are exact.
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


def _interp_bf16(t: torch.Tensor) -> bool:
    # The interpreter's bfloat16 workarounds, not the tensor's device: the sm_90 compile
    # test (tests/triton_sm90.py) launches on CPU tensors outside the interpreter, and must
    # get the GPU's specialization.
    return t.dtype == torch.bfloat16 and _ext.triton_interpreted()


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def _scratch(shape, dtype, device) -> torch.Tensor:
    out = torch.empty(shape, dtype=dtype, device=device)
    if POISON[0]:
        out.fill_(float("nan"))
    return out


def conv_sum(launch, sources, out: torch.Tensor, biases=(), flip: bool = False) -> torch.Tensor:
    """``out = sum_s conv2d(x_s, w_s, padding=K//2) + sum(biases)``, written into ``out``.

    ``sources`` is a list of ``(x_s, w_s)`` with x_s (B, Cin_s, H, W) in any strides and
    w_s (Cout, Cin_s, K, K) in any strides (a transposed view for the data gradients,
    ``flip=True`` then flips its taps). ``out`` (B, Cout, H, W) is written in its own
    strides; ``biases`` are up to two (Cout,) tensors. Launched in groups of MAX_SOURCES
    sources; groups before the last carry their sum in a float scratch.
    """
    B, cout, H, W = out.shape
    K = sources[0][1].shape[-1]
    P = H * W
    if out.numel() == 0:
        return out
    acc_tl, acc_torch = _acc(out.dtype)
    bp = _pow2(P, 16, 64)
    bco = _pow2(cout, 16, 64)
    # reduction chunk over (tap, channel): 32, or 16 for a 1x1 kernel over few channels
    br = _pow2(K * K * max(x.shape[1] for x, _ in sources), 16, 32)
    grid = (triton.cdiv(P, bp), triton.cdiv(cout, bco), B)
    groups = [sources[i:i + MAX_SOURCES] for i in range(0, len(sources), MAX_SOURCES)]
    scratch = None
    if len(groups) > 1:
        scratch = _scratch((B, cout, H, W), acc_torch, out.device)
    for n, group in enumerate(groups):
        last = n == len(groups) - 1
        dst = out if last else scratch
        args = []
        for x, w in group + [group[0]] * (MAX_SOURCES - len(group)):
            args += [*x.stride(), x.shape[1], *w.stride()]
        bias = list(biases) if last else []
        launch(_conv_sum_kernel)[grid](
            dst, scratch if n > 0 else dst, *(bias + [dst, dst])[:2],
            *[x for x, _ in group] + [group[0][0]] * (MAX_SOURCES - len(group)),
            *[w for _, w in group] + [group[0][1]] * (MAX_SOURCES - len(group)),
            H, W, cout, *dst.stride(), *args,
            NUM_SRC=len(group), K=K, FLIP=flip, HAS_BIAS0=len(bias) > 0,
            HAS_BIAS1=len(bias) > 1, READ_ACC=n > 0, ACC=acc_tl,
            PREC=_precision(out.dtype), INTERP_BF16=_interp_bf16(out), BLOCK_P=bp, BLOCK_R=br,
            BLOCK_CO=bco)
    return out


def weight_grads(launch, g: torch.Tensor, sources, kernel_size: int, bias: bool):
    """Gradients of ``conv2d(x_s, w_s)`` (summed into an output with gradient ``g``) with
    respect to each w_s, and to a bias when ``bias``.

    g: (B, Cout, H, W); sources: tensors x_s (B, Cin_s, H, W). Returns ``([dw_s (Cout,
    Cin_s, K, K)], db (Cout,) or None)`` in g's dtype, reduced in float32 (float64 for
    float64) from per-program partial sums.
    """
    B, cout, H, W = g.shape
    K = kernel_size
    P = H * W
    acc_tl, acc_torch = _acc(g.dtype)
    bp = _pow2(P, 16, 64)
    bo = _pow2(cout, 16, 64)
    blocks = triton.cdiv(P, bp)
    # Position chunks: at most 64 partial rows over the batch (B * chunks), which bounds
    # the partial buffer to 64 copies of the weight gradient; with the column blocks in
    # the grid (K*K*C / 64 of them) that is still thousands of programs at realistic sizes.
    chunks = max(1, min(blocks, 64 // max(B, 1)))
    iters = triton.cdiv(blocks, chunks)
    chunks = triton.cdiv(blocks, iters)
    rows = B * chunks
    grads, db = [], None
    for n in range(0, len(sources), MAX_SOURCES):
        group = sources[n:n + MAX_SOURCES]
        ncol = K * K * max(x.shape[1] for x in group)  # columns (tap, channel)
        bt = _pow2(ncol, 16, 64)
        with_bias = bias and n == 0
        part = _scratch((rows, len(group), cout, ncol), acc_torch, g.device)
        bias_part = _scratch((rows, cout) if with_bias else (1,), acc_torch, g.device)
        if rows > 0 and P > 0:
            padded = group + [group[0]] * (MAX_SOURCES - len(group))
            args = []
            for x in padded:
                args += [*x.stride(), x.shape[1]]
            launch(_wgrad_kernel)[(chunks, triton.cdiv(ncol, bt), B)](
                part, bias_part, g, *padded, H, W, cout, ncol, iters, chunks, *g.stride(),
                *args, *part.stride()[:3],
                NUM_SRC=len(group), K=K, HAS_BIAS=with_bias, ACC=acc_tl,
                PREC=_precision(g.dtype), INTERP_BF16=_interp_bf16(g), BLOCK_P=bp, BLOCK_O=bo,
                BLOCK_T=bt)
        total = part.sum(0)  # (S, Cout, NCOL)
        for s, x in enumerate(group):
            cin = x.shape[1]
            dw = total[s, :, :K * K * cin].reshape(cout, K, K, cin).permute(0, 3, 1, 2)
            grads.append(dw.to(g.dtype).contiguous())
        if with_bias:
            db = bias_part.sum(0).to(g.dtype)
    return grads, db


def _logical(history, head: int):
    m = len(history)
    return [history[(head + i) % m] for i in range(m)]


def forward(launch, history, head: int, p_weights, p_biases, g_weights, g_biases):
    """The chain v_0 .. v_{N-1}, one launch per level.

    history: M tensors (B, C, H, W) in *physical* ring order; logical state i (0 = oldest)
    is ``history[(head + i) % M]``. p_weights: N tensors (R, C, K, K, D) with D = M - N + 1;
    p_biases: N tensors (R,) or empty; g_weights: N - 1 tensors (R, R, K, K); g_biases: N - 1
    tensors (R,) or empty. Returns ``[v_0, ..., v_{N-1}]``, each (B, R, H, W) in the
    memory format of the level's oldest window state.
    """
    hist = _logical(history, head)
    n, d = len(p_weights), p_weights[0].shape[-1]
    vs = []
    for level in range(n):
        w = p_weights[level]
        sources = [(hist[level + i], w[..., i]) for i in range(d)]
        biases = [p_biases[level]] if len(p_biases) else []
        if level > 0:
            sources.append((vs[-1], g_weights[level - 1]))
            if len(g_biases):
                biases.append(g_biases[level - 1])
        v = new_like_layout(hist[level], w.shape[0])
        vs.append(conv_sum(launch, sources, v, biases))
    return vs


def backward(launch, grad, history, head: int, vs, p_weights, g_weights, p_bias: bool,
             g_bias: bool, need_history, need_weights: bool):
    """Gradients of v_{N-1} (gradient ``grad``, (B, R, H, W), any strides) through the chain.

    ``vs`` are the forward's v_0 .. v_{N-2} (v_{N-1} is not needed). ``need_history``
    (M flags, storage order) and ``need_weights`` say which gradients to compute; the
    others come back as empty tensors. Returns ``(d_history, d_p_weights, d_p_biases,
    d_g_weights, d_g_biases)``, lists like the forward's arguments (``d_history`` in
    storage order; bias lists empty without biases).
    """
    m, n = len(history), len(p_weights)
    d = p_weights[0].shape[-1]
    k = p_weights[0].shape[-2]
    hist = _logical(history, head)
    wanted = [j for j in range(m) if need_history[(head + j) % m]]
    # Output gradients g_l = dL/dv_l, from the top level down to the lowest one needed
    # (state j is read by levels j-D+1 .. j; the weight gradients need every level).
    lowest = 0 if need_weights else min([max(0, j - d + 1) for j in wanted], default=n - 1)
    gs = [None] * n
    gs[-1] = grad
    for level in range(n - 1, lowest, -1):
        gs[level - 1] = conv_sum(launch, [(gs[level], g_weights[level - 1].transpose(0, 1))],
                                 new_like_layout(vs[level - 1], vs[level - 1].shape[1]),
                                 flip=True)
    d_history = [grad.new_empty(0) for _ in range(m)]  # outputs of an op may not alias
    for j in wanted:  # one launch per state, over the levels whose window holds it
        levels = range(max(0, j - d + 1), min(n - 1, j) + 1)
        sources = [(gs[lv], p_weights[lv][..., j - lv].transpose(0, 1)) for lv in levels]
        d_history[(head + j) % m] = conv_sum(
            launch, sources, new_like_layout(hist[j], hist[j].shape[1]), flip=True)
    if not need_weights:
        return (d_history, *([grad.new_empty(0) for _ in range(count)] for count in
                             (n, n if p_bias else 0, n - 1, n - 1 if g_bias else 0)))
    dp, dpb, dg, dgb = [], [], [], []
    for level in range(n):
        # P_l's sources (its window) and G_{l-1}'s (v_{l-1}) share the output gradient g_l:
        # one launch reads each g_l tile once for all of them.
        sources = [hist[level + i] for i in range(d)] + ([vs[level - 1]] if level else [])
        with_bias = p_bias or (level > 0 and g_bias)
        grads, db = weight_grads(launch, gs[level], sources, k, with_bias)
        dp.append(torch.stack(grads[:d], dim=-1))
        if p_bias:
            dpb.append(db)
        if level:
            dg.append(grads[d])
            if g_bias:
                dgb.append(db.clone() if p_bias else db)  # the same sum; no aliased outputs
    return d_history, dp, dpb, dg, dgb
