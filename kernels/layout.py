"""Strided addressing shared by the pointwise kernels.

Every (B, K, H, W) tensor is addressed as (b, channel, p) with ``p = h * W + w`` and its own
strides ``(sb, sc, sp)``, so contiguous NCHW (sp = 1), channels_last (sc = 1) and channel
slices of a larger buffer (the c and m halves of ``[c; m]``) all run without a copy. That
needs H and W to collapse into one index (stride_h == W * stride_w), true for both memory
formats and their channel slices; :func:`flat_strides` copies anything else.

Triton specializes integer arguments equal to 1, so the unit stride of either layout is a
compile-time constant and the loads along it are vectorized and coalesced.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


def flat_strides(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``(t', (sb, sc, sp))`` with ``t'`` = ``t`` or a contiguous copy when H, W do not
    collapse into one index."""
    _, _, h, w = t.shape
    sb, sc, sh, sw = t.stride()
    if h > 1 and w > 1 and sh != w * sw:
        t = t.contiguous()
        sb, sc, sh, sw = t.stride()
    return t, (sb, sc, sw if w > 1 else sh)


def new_like_layout(like: torch.Tensor, channels: int, dtype=None) -> torch.Tensor:
    """A (B, channels, H, W) output in ``like``'s memory format (channels_last stays
    channels_last for the convolution that reads it next)."""
    b, _, h, w = like.shape
    fmt = (torch.channels_last if like.dim() == 4 and not like.is_contiguous()
           and like.is_contiguous(memory_format=torch.channels_last)
           else torch.contiguous_format)
    out = torch.empty((b, channels, h, w), dtype=dtype or like.dtype, device=like.device,
                      memory_format=fmt)
    if POISON[0]:
        out.fill_(float("nan"))
    return out


# Tests set POISON[0] = True: outputs start NaN-filled, so an element a kernel forgets to
# write fails the comparison instead of passing with stale memory.
POISON = [False]


def launch_grid(batch: int, channels: int, positions: int, meta_c: int, meta_p: int):
    """The 3-D grid of the pointwise kernels: (position blocks, channel blocks, batch)."""
    return (triton.cdiv(positions, meta_p), triton.cdiv(channels, meta_c), batch)


def block_sizes(channels: int, positions: int) -> tuple[int, int]:
    """Tile (BLOCK_C, BLOCK_P) of about 2048 elements: all channels of a small cell in one
    tile (the 4 gates of a channel are read by the same program), the rest along positions."""
    block_c = min(triton.next_power_of_2(channels), 32)
    block_p = max(16, min(triton.next_power_of_2(positions), 2048 // block_c))
    return block_c, block_p


@triton.jit
def tile_offsets(C, P, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Channel indices (BLOCK_C, 1), position indices (1, BLOCK_P), the in-bounds mask and
    the batch index of this program."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    mask = (c < C) & (p < P)
    return c, p, mask, tl.program_id(2).to(tl.int64)


@triton.jit
def load(ptr, b, ch, p, mask, sb, sc, sp, ACC: tl.constexpr):
    """Element (b, ch, p) of a strided tensor, in the accumulation dtype ``ACC``."""
    return tl.load(ptr + b * sb + ch * sc + p * sp, mask=mask, other=0.0).to(ACC)


@triton.jit
def store(ptr, value, b, ch, p, mask, sb, sc, sp):
    tl.store(ptr + b * sb + ch * sc + p * sp, value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def store_rn(ptr, value, b, ch, p, mask, sb, sc, sp):
    """:func:`store` whose bfloat16 results are rounded to nearest even, as a GPU's
    conversion rounds. Triton's interpreter truncates float32 -> bfloat16 (its cast ignores
    the rounding mode), which doubles the rounding error of every bfloat16 output in the CPU
    tests; rounding the float32 bits first makes the conversion exact in both."""
    if ptr.dtype.element_ty == tl.bfloat16:
        bits = value.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        value = bits.to(tl.float32, bitcast=True)
    tl.store(ptr + b * sb + ch * sc + p * sp, value.to(ptr.dtype.element_ty), mask=mask)


# Warps of the pointwise kernels: 8, i.e. 8 elements of each ~2048-element tile per thread.
# With 4 (16 elements per thread) ST-LSTM's forward needs more than a thread's 255
# registers on sm_90 in float32, and the two-memory kernels and ConvLSTM's backward in
# float64, and they spill; with 8 none spills in any dtype at C = 32, 64x64
# (tests/test_triton_sm90.py compiles them for sm_90 and checks).
POINTWISE_WARPS = 8


def launch_pointwise(launch, kernel, inputs, outputs, C: int, extra=(), **meta):
    """Launches a pointwise kernel over (B, C, H, W) tiles with arguments
    ``(*inputs, *outputs, C, P, <(sb, sc, sp) of each input, then of each output>, *extra)``
    and the tile sizes; inputs whose H, W do not collapse are copied first."""
    B, _, H, W = outputs[0].shape
    P = H * W
    flat = [flat_strides(t) for t in inputs]
    block_c, block_p = block_sizes(C, P)
    meta.setdefault("num_warps", POINTWISE_WARPS)
    launch(kernel)[launch_grid(B, C, P, block_c, block_p)](
        *(t for t, _ in flat), *outputs, C, P,
        *(s for _, ss in flat for s in ss), *(s for t in outputs for s in flat_strides(t)[1]),
        *extra, BLOCK_C=block_c, BLOCK_P=block_p, **meta)
