"""How the fused backends evaluate ``W * [x; h] + b`` (ConvLSTM, MK-LSTM, Conv-TT-LSTM).

Measured on oneDNN (2-core Zen3, B=4, C=32, 64x64, benchmarks/NOTES.md): when x needs a
gradient, one convolution over the concatenation runs faster than two over x and h; when
it does not (a first layer's frames), two convolutions are faster because x's input
gradient is never computed, and neither keeps a concatenated copy for backward.
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
    zx = F.conv2d(x, weight[:, :cin], bias, padding=padding)
    return F.conv2d(h, weight[:, cin:], None, padding=padding).add_(zx)
