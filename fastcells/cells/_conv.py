"""How the cells run their convolutions: every convolution of a cell step goes through
:func:`conv` (or the two helpers below, built on it), given the step's backend.

On the fused CPU backend (``cpp``) that is :func:`fastcells.ops.conv.conv2d`: oneDNN
(``F.conv2d``) by default; with ``fastcells.set_conv_algorithm("auto")`` forward, data
gradient and weight gradient each by the fastest of oneDNN, NNPACK, unfold + matmul and a
Winograd weight gradient, chosen per shape by timing once, or a forced one.
Every other backend (the reference, and the GPU backends, where cuDNN chooses) calls
``F.conv2d``. A new cell routes a convolution by writing ``conv(backend, x, w, b, pad)``
where it would write ``F.conv2d(x, w, b, padding=pad)``.

Measured on oneDNN (2-core Zen3, B=4, C=32, 64x64, benchmarks/NOTES.md): when x needs a
gradient, one convolution over the concatenation runs faster than two over x and h; when
it does not (a first layer's frames), two convolutions are faster because x's input
gradient is never computed, and neither keeps a concatenated copy for backward. Where the
autotuned convolution takes another algorithm (Winograd), :func:`conv_sum` is one
convolution of the concatenation in either case, without keeping it for backward
(:mod:`fastcells.ops.conv_sum` says why and how much).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.conv import conv2d
from ..ops.conv_sum import conv2d_sum, conv2d_sum_ref, stacks


def conv(backend: str, x: Tensor, weight: Tensor, bias: Tensor | None = None,
         padding=0) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` as ``backend`` runs it (the autotuned
    CPU convolution on ``cpp``, ``F.conv2d`` itself on every other backend)."""
    if backend == "cpp":
        return conv2d(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, padding=padding)


def conv_sum(backend: str, xs: list, weights: list, bias: Tensor | None = None,
             padding=0, rows=None) -> Tensor:
    """``conv(xs[0], weights[0], bias) + conv(xs[1], weights[1]) + ...`` (each weight's
    output rows picked by ``rows``, see :func:`fastcells.ops.conv_sum.conv2d_sum`) as
    ``backend`` runs it: on ``cpp`` one convolution of the inputs' channel concatenation,
    elsewhere ``F.conv2d`` per input, added."""
    if backend == "cpp":
        return conv2d_sum(xs, weights, bias, padding, rows)
    return conv2d_sum_ref(xs, weights, bias, padding, rows)


def input_hidden_conv(backend: str, x: Tensor, h: Tensor, weight: Tensor, bias: Tensor | None,
                      padding: int, zx: Tensor | None = None) -> Tensor:
    """``conv2d([x; h], weight, bias)`` with ``weight`` (K, Cin + C, k, k), on a fused backend.

    ``zx``, when given, is the input half ``conv2d(x, weight[:, :Cin], bias)`` computed
    beforehand (for every frame of a sequence at once).
    """
    cin = weight.shape[1] - h.shape[1]
    if zx is not None:
        return conv(backend, h, weight[:, cin:], None, padding).add_(zx)
    halves = [weight[:, :cin], weight[:, cin:]]
    if backend == "cpp" and stacks([x, h], halves, padding):
        # an algorithm other than oneDNN runs it: one convolution, nothing concatenated kept
        return conv2d_sum([x, h], halves, bias, padding)
    if x.requires_grad:
        return conv(backend, torch.cat([x, h], dim=1), weight, bias, padding)
    zx = conv(backend, x, weight[:, :cin], bias, padding)
    return conv(backend, h, weight[:, cin:], None, padding).add_(zx)
