"""A whole ConvLSTM step, convolution included (CELLS.md section 1):

    z = W * [x; h_prev] + b        or, given zx = W_x * x + b (x's projection, precomputed),
    z = W_h * h_prev + zx
    (h, c) = convlstm_gates(z, c_prev, peephole, forget_bias)

Shapes: x (B, Cin, H, W), h_prev and c_prev (B, C, H, W), weight (4C, Cin + C, K, K) with K
odd ("same" zero padding K//2, stride 1) and output channels in gate order i, f, o, g,
bias (4C,), zx (B, 4C, H, W), peephole (3, C). Returns ``(h, c)``, each (B, C, H, W).

:func:`conv_gates_triton` runs the convolution as an implicit GEMM with the gate math as its
epilogue (kernels/conv_gates.py), so z never reaches memory. Its backward is the gate
backward kernel (dz from the saved activations) followed by the convolution's input, weight
and bias gradients in PyTorch (cuDNN on GPUs). It is the ``fused_conv=True`` option of
:class:`fastcells.ConvLSTMCell`, off by default until a GPU measurement says it pays
(benchmarks/NOTES.md).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _triton
from ._common import autograd_pair, grad_or_zeros
from .convlstm_gates import convlstm_gates_ref


def conv_gates_ref(x: Optional[Tensor], h: Tensor, c_prev: Tensor, weight: Tensor,
                   bias: Optional[Tensor] = None, peephole: Optional[Tensor] = None,
                   forget_bias: float = 0.0, zx: Optional[Tensor] = None
                   ) -> Tuple[Tensor, Tensor]:
    """Eager reference: ``F.conv2d`` over the concatenation, then the gate equations."""
    cin = _check(x, h, c_prev, weight, bias, zx)
    pad = weight.shape[-1] // 2
    if zx is None:
        z = F.conv2d(torch.cat([x, h], dim=1), weight, bias, padding=pad)
    else:
        z = F.conv2d(h, weight[:, cin:], None, padding=pad) + zx
    return convlstm_gates_ref(z, c_prev, peephole, forget_bias)


def _check(x, h, c_prev, weight, bias, zx) -> int:
    """Validates the arguments; returns Cin (the input channels of ``weight``)."""
    if h.dim() != 4 or c_prev.shape != h.shape:
        raise ValueError(f"h and c_prev must be (B, C, H, W) of one shape, got "
                         f"{tuple(h.shape)} and {tuple(c_prev.shape)}")
    B, C, H, W = h.shape
    if weight.dim() != 4 or weight.shape[0] != 4 * C or weight.shape[2] != weight.shape[3] \
            or weight.shape[2] % 2 == 0 or weight.shape[1] < C:
        raise ValueError(f"weight must be (4C, Cin + C, K, K) with K odd and C = {C}, got "
                         f"{tuple(weight.shape)}")
    cin = weight.shape[1] - C
    if (x is None) == (zx is None):
        raise ValueError("pass exactly one of x (convolved here) and zx (its precomputed "
                         "projection W_x * x + b)")
    if zx is not None:
        if zx.shape != (B, 4 * C, H, W):
            raise ValueError(f"zx must be {(B, 4 * C, H, W)}, got {tuple(zx.shape)}")
        if bias is not None:
            raise ValueError("zx already holds the bias (W_x * x + b): pass bias=None with zx")
    elif x.shape != (B, cin, H, W):
        raise ValueError(f"x must be {(B, cin, H, W)} (Cin from weight.shape[1] - C), got "
                         f"{tuple(x.shape)}")
    if bias is not None and bias.shape != (4 * C,):
        raise ValueError(f"bias must be ({4 * C},), got {tuple(bias.shape)}")
    dtypes = {t.dtype for t in (x, h, c_prev, weight, bias, zx) if t is not None}
    if len(dtypes) > 1:
        raise TypeError(f"x, h, c_prev, weight, bias and zx must share one dtype, got "
                        f"{sorted(map(str, dtypes))}")
    return cin


# ----------------------------------------------------------------------------- Triton
def _setup_context(ctx, inputs, output):
    x, h, c_prev, weight, bias, zx, peephole, _ = inputs
    _, c, acts = output
    # As in the gate op: the activations stand in for z (which never existed in memory);
    # x, h and the unpacked weight are what the convolution's gradients read.
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)
    ctx.has_bias, ctx.has_zx = bias is not None, zx is not None
    ctx.save_for_backward(x, h, weight, acts, c_prev, c, peephole)


def _conv_backward(x, h, weight, dz, need_x: bool, need_h: bool, need_w: bool):
    """Gradients of ``W * [x; h]`` (x may be None) for dz (B, 4C, H, W): (dx, dh, dweight).

    One transposed convolution gives both input gradients when both are needed (dz read
    once); the weight gradient is two convolutions, x's and h's, so no concatenated [x; h]
    is ever materialized (the small weight gradients are concatenated instead)."""
    pad = weight.shape[-1] // 2
    cin = x.shape[1] if x is not None else 0
    dx = dh = dw = None
    if need_x and need_h:
        dxh = torch.nn.grad.conv2d_input((h.shape[0], cin + h.shape[1], *h.shape[2:]),
                                         weight, dz, padding=pad)
        dx, dh = dxh[:, :cin], dxh[:, cin:]
    elif need_x:
        dx = torch.nn.grad.conv2d_input(x.shape, weight[:, :cin], dz, padding=pad)
    elif need_h:
        dh = torch.nn.grad.conv2d_input(h.shape, weight[:, cin:], dz, padding=pad)
    if need_w:
        dw_h = torch.nn.grad.conv2d_weight(h, weight[:, cin:].shape, dz, padding=pad)
        dw = dw_h if x is None else torch.cat(
            [torch.nn.grad.conv2d_weight(x, weight[:, :cin].shape, dz, padding=pad), dw_h], 1)
    return dx, dh, dw


def _backward(ctx, grad_h, grad_c, _grad_acts, kernel):
    x, h, weight, acts, c_prev, c, peephole = ctx.saved_tensors
    dz, dc_prev, dpeep = kernel(grad_or_zeros(grad_h, c_prev), grad_or_zeros(grad_c, c_prev),
                                acts, c_prev, c, peephole)
    need = ctx.needs_input_grad
    dx, dh, dw = _conv_backward(x, h, weight, dz, x is not None and need[0], need[1], need[3])
    db = dz.sum((0, 2, 3)) if ctx.has_bias and need[4] else None
    dzx = dz if ctx.has_zx and need[5] else None
    return (dx, dh, dc_prev if need[2] else None, dw, db, dzx,
            dpeep if peephole is not None and need[6] else None, None)


_triton_apply = autograd_pair(
    "ConvGatesTriton",
    _triton.eager("conv_gates", "forward"),
    _triton.library_op("conv_gates_triton",
                       "(Tensor? x, Tensor h, Tensor c_prev, Tensor weight, Tensor? bias, "
                       "Tensor? zx, Tensor? peephole, float forget_bias) "
                       "-> (Tensor, Tensor, Tensor)",
                       "conv_gates", "forward"),
    # The backward is the ConvLSTM gate op's own (registered in .convlstm_gates).
    _triton.eager("convlstm_gates", "backward"),
    torch.ops.fastcells.convlstm_gates_triton_backward.default,
    _setup_context, _backward)


def conv_gates_triton(x: Optional[Tensor], h: Tensor, c_prev: Tensor, weight: Tensor,
                      bias: Optional[Tensor] = None, peephole: Optional[Tensor] = None,
                      forget_bias: float = 0.0, zx: Optional[Tensor] = None
                      ) -> Tuple[Tensor, Tensor]:
    """Fused Triton convolution + gates; same contract as :func:`conv_gates_ref`.

    With ``zx`` (and x None) only ``weight[:, Cin:]`` is used; ``weight`` may be the full
    (4C, Cin + C, K, K) tensor (its x columns then get a zero gradient from this op) or
    just the h columns (4C, C, K, K)."""
    cin = _check(x, h, c_prev, weight, bias, zx)
    if zx is not None and cin:
        weight = weight[:, cin:]
    if peephole is not None:
        peephole = peephole.contiguous()
    if bias is not None:
        bias = bias.contiguous()
    h, c, _ = _triton_apply(x, h, c_prev, weight, bias, zx, peephole, float(forget_bias))
    return h, c
