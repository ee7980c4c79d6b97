"""ConvLSTM cell (Shi et al. 2015), CELLS.md section 1."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_odd_kernel
from ..ops.conv_gates import conv_gates_triton
from ._conv import conv, input_hidden_conv
from .base import CellBase


class ConvLSTMCell(CellBase):
    r"""Convolutional LSTM cell, as in ndrplz/ConvLSTM_pytorch and NVlabs/conv-tt-lstm.

    .. math::
        z = W * [x_t; h_{t-1}] + b,\quad i, f, o, g = \mathrm{split}(z)\\
        c_t = \sigma(f + b_f) \odot c_{t-1} + \sigma(i) \odot \tanh(g),\quad
        h_t = \sigma(o) \odot \tanh(c_t)

    Args:
        input_size: channels of ``x`` (Cin).
        hidden_size: channels of ``h`` and ``c`` (C).
        kernel_size: odd kernel size of the convolution ("same" zero padding).
        bias: learn the bias ``b`` of the convolution.
        forget_bias: constant added to the forget gate pre-activation (default 0).
        peephole: add Shi et al.'s per-channel Hadamard terms ``w_ci*c_{t-1}``,
            ``w_cf*c_{t-1}`` (in i and f) and ``w_co*c_t`` (in o); the parameter
            ``peephole_weight`` has shape (3, C) holding (w_ci, w_cf, w_co).
        backend: ``"auto"``, ``"reference"`` or ``"cpp"`` (see :mod:`fastcells.backends`).
        memory_efficient: keep only the step's inputs for backward and recompute the
            convolutions there (less memory, about one extra forward convolution of time).
        fused_conv: run the convolution and the gates as one Triton kernel (an implicit
            GEMM over ``[x; h]`` with the gate math as its epilogue, so z is never written;
            :func:`fastcells.ops.conv_gates_triton`). Needs ``backend="triton"``. Off by
            default: not yet measured faster on a GPU (benchmarks/NOTES.md).

    Shapes:
        - x: (B, Cin, H, W)
        - state: ``(h, c)``, each (B, C, H, W); None means zeros
        - returns the new state ``(h, c)``; ``h`` is the output.

    Parameters: ``conv.weight`` (4C, Cin + C, k, k) with output channels in gate order
    i, f, o, g, ``conv.bias`` (4C), and ``peephole_weight`` (3, C) when ``peephole``.
    """

    state_names = ("h", "c")
    kind = "convlstm"  # the key of backends.AUTO_PREFERENCE

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3, bias: bool = True,
                 forget_bias: float = 0.0, peephole: bool = False, backend: str = "auto",
                 memory_efficient: bool = False, fused_conv: bool = False):
        super().__init__(input_size, hidden_size, backend, memory_efficient)
        if fused_conv and self.requested_backend != "triton":
            raise ValueError(f"fused_conv=True is a Triton kernel: it needs backend='triton', "
                             f"got backend={backend!r}")
        self.fused_conv = bool(fused_conv)
        _check_odd(kernel_size)
        self.kernel_size = kernel_size
        self.padding = kernel_size // 2
        self.forget_bias = float(forget_bias)
        self.conv = nn.Conv2d(input_size + hidden_size, 4 * hidden_size, kernel_size,
                              padding=self.padding, bias=bias)
        self.peephole_weight = (nn.Parameter(torch.zeros(3, hidden_size)) if peephole else None)

    def input_projection(self, x: Tensor) -> Tensor:
        """The input half of the convolution for every frame of x (B, T, Cin, H, W) at once."""
        b, t = x.shape[:2]
        p = self._params()
        w = p["conv.weight"][:, : self.input_size]
        z = conv(self._backend_for(x), x.reshape(b * t, *x.shape[2:]), w, p.get("conv.bias"),
                 self.padding)
        return z.view(b, t, *z.shape[1:])

    def _step(self, backend, p, x, zx, h, c):
        weight, bias = p["conv.weight"], p.get("conv.bias")
        if self.fused_conv:
            # zx (the sequence layer's batched input projection) already holds the bias.
            return conv_gates_triton(x if zx is None else None, h, c, weight,
                                     bias if zx is None else None, p.get("peephole_weight"),
                                     self.forget_bias, zx=zx)
        if backend == "reference":
            z = F.conv2d(torch.cat([x, h], dim=1), weight, bias, padding=self.padding)
        else:
            z = input_hidden_conv(backend, x, h, weight, bias, self.padding, zx)
        return self._gates(backend).convlstm(z, c, p.get("peephole_weight"), self.forget_bias)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", kernel_size={self.kernel_size}"
                + (f", forget_bias={self.forget_bias}" if self.forget_bias else "")
                + (", peephole=True" if self.peephole_weight is not None else "")
                + (", fused_conv=True" if self.fused_conv else ""))


def _check_odd(kernel_size, name: str = "kernel_size") -> None:
    check_odd_kernel(name, kernel_size)
