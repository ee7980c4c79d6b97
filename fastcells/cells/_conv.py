"""How the fused backends evaluate ``W * [x; h] + b`` (ConvLSTM, MK-LSTM, Conv-TT-LSTM).

Measured on oneDNN (2-core Zen3, B=4, C=32, 64x64, benchmarks/NOTES.md): when x needs a
gradient, one convolution over the concatenation runs faster than two over x and h; when
it does not (a first layer's frames), two convolutions are faster because x's input
gradient is never computed, and neither keeps a concatenated copy for backward.

Frames with few channels (1-4: MNIST, radar, TaxiBJ) meet a slow oneDNN weight gradient on
CPU: for x (4, 1, 64, 64) and 224 output channels it took 10-22 ms where one batched matmul
over the unfolded frame takes 3 ms (benchmarks/NOTES.md). :func:`input_conv` routes them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def input_hidden_conv(x: Tensor, h: Tensor, weight: Tensor, bias: Tensor | None, padding: int,
                      zx: Tensor | None = None) -> Tensor:
    """``conv2d([x; h], weight, bias)`` with ``weight`` (K, Cin + C, k, k).

    ``zx``, when given, is the input half ``conv2d(x, weight[:, :Cin], bias)`` computed
    beforehand (for every frame of a sequence at once).
    """
    cin = weight.shape[1] - h.shape[1]
    if zx is not None:
        return F.conv2d(h, weight[:, cin:], None, padding=padding).add_(zx)
    if x.requires_grad:
        return F.conv2d(torch.cat([x, h], dim=1), weight, bias, padding=padding)
    zx = input_conv(x, weight[:, :cin], bias, padding)
    return F.conv2d(h, weight[:, cin:], None, padding=padding).add_(zx)


THIN_CHANNELS = 4


def input_conv(x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """``conv2d(x, weight, bias)`` ("same" padding) for a step's input on the fused backends."""
    if (x.device.type == "cpu" and x.shape[1] <= THIN_CHANNELS and weight.requires_grad
            and torch.is_grad_enabled() and not torch.compiler.is_compiling()):
        return ThinInputConv.apply(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, padding=padding)


class ThinInputConv(torch.autograd.Function):
    """Convolution whose weight gradient is one batched matmul over the unfolded input:
    ``dW[o, (c, i, j)] = sum_b dz[b] @ unfold(x[b])^T`` (small when x has few channels)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.padding = padding
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        grad = grad.contiguous()
        if ctx.needs_input_grad[0]:
            gx = torch.nn.grad.conv2d_input(x.shape, weight, grad, padding=ctx.padding)
        if ctx.needs_input_grad[1]:
            cols = F.unfold(x, weight.shape[2:], padding=ctx.padding)  # (B, Cin*k*k, H*W)
            gw = torch.bmm(grad.flatten(2), cols.transpose(1, 2)).sum(0).view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3))
        return gx, gw, gb, None
