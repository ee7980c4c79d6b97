"""ConvLSTM with separate input and hidden convolutions: OpenSTL's cell (CELLS.md section 5),
also MS-RNN's ``ConvLSTM_Cell`` (biased convolutions)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._conv import conv
from .base import CellBase
from .convlstm import _check_odd


class SplitConvLSTMCell(CellBase):
    r"""ConvLSTM cell in OpenSTL's layout: two convolutions, gate order i, f, g, o.

    .. math::
        z = \mathrm{LN}(W_x * x_t + b_x) + \mathrm{LN}(W_h * h_{t-1} + b_h),\quad
        i, f, g, o = \mathrm{split}(z)\\
        c_t = \sigma(f + b_f) \odot c_{t-1} + \sigma(i) \odot \tanh(g),\quad
        h_t = \sigma(o) \odot \tanh(c_t)

    The same function as :class:`ConvLSTMCell` with the weights laid out as OpenSTL
    (``openstl/modules/convlstm_modules.py``) and MS-RNN (``models/convlstm.py``) store them,
    so their checkpoints load unchanged: the input and hidden convolutions are separate
    modules, and their output channels are in the order i, f, g, o (ConvLSTMCell: one
    convolution over ``[x; h]``, order i, f, o, g). OpenSTL applies no forget bias (its
    ``_forget_bias = 1.0`` is never read), so the default is 0.

    Args:
        input_size, hidden_size: Cin and C.
        kernel_size: odd kernel size of both convolutions.
        bias: biases on the convolutions (OpenSTL: none; MS-RNN: both).
        layer_norm: LayerNorm over (4C, H, W) after each convolution (OpenSTL's
            ``layer_norm=1``); it fixes the spatial size, so ``spatial_size`` is required.
        spatial_size: ``H`` (square) or ``(H, W)``.
        forget_bias: constant added to the forget gate pre-activation (default 0).
        unused_convs: also hold OpenSTL's ``conv_o`` (2C -> C, kernel k, LayerNorm'd with
            ``layer_norm``) and ``conv_last`` (2C -> C, 1x1), which its forward never calls
            but which are in its checkpoints and its parameter count.
        backend, memory_efficient: see :class:`fastcells.ConvLSTMCell`.

    Shapes:
        - x: (B, Cin, H, W)
        - state: ``(h, c)``, each (B, C, H, W); None means zeros
        - returns the new state ``(h, c)``; ``h`` is the output.

    Parameters (OpenSTL's names): ``conv_x.0`` (4C, Cin, k, k), ``conv_h.0`` (4C, C, k, k),
    output channels in gate order i, f, g, o; ``conv_x.1``, ``conv_h.1`` the LayerNorms;
    ``conv_o.*`` and ``conv_last`` with ``unused_convs``.

    How the fused backends meet the gate kernel's order (i, f, o, g, CELLS.md section 1)
    without touching the weights: the sum ``zx + zh`` that every step computes anyway is
    written straight into the kernel's order (:func:`add_in_gate_order`), so reordering
    costs nothing in the forward and one copy of the gradient in the backward.
    """

    state_names = ("h", "c")
    kind = "convlstm"  # the key of backends.AUTO_PREFERENCE: the gates are ConvLSTM's

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3,
                 bias: bool = False, layer_norm: bool = False, spatial_size=None,
                 forget_bias: float = 0.0, unused_convs: bool = False, backend: str = "auto",
                 memory_efficient: bool = False):
        super().__init__(input_size, hidden_size, backend, memory_efficient)
        _check_odd(kernel_size)
        if isinstance(spatial_size, int):
            spatial_size = (spatial_size, spatial_size)
        if layer_norm and spatial_size is None:
            raise ValueError("spatial_size: layer_norm=True normalizes over (4C, H, W), so "
                             "spatial_size=(H, W) (or H) is required")
        self.kernel_size, self.padding = kernel_size, kernel_size // 2
        self.layer_norm = bool(layer_norm)
        self.spatial_size = tuple(spatial_size) if layer_norm else None
        self.forget_bias = float(forget_bias)
        C = hidden_size

        def block(cin, cout, with_bias):
            conv = nn.Conv2d(cin, cout, kernel_size, padding=self.padding, bias=with_bias)
            if layer_norm:
                return nn.Sequential(conv, nn.LayerNorm([cout, *self.spatial_size]))
            return nn.Sequential(conv)

        self.conv_x = block(input_size, 4 * C, bias)
        self.conv_h = block(C, 4 * C, bias)
        self.unused_convs = bool(unused_convs)
        if unused_convs:  # OpenSTL's, bias-free there
            self.conv_o = block(2 * C, C, False)
            self.conv_last = nn.Conv2d(2 * C, C, 1, bias=False)

    def _conv(self, backend: str, p: dict, name: str, x: Tensor) -> Tensor:
        z = conv(backend, x, p[f"{name}.0.weight"], p.get(f"{name}.0.bias"), self.padding)
        if self.layer_norm:
            z = F.layer_norm(z, z.shape[1:], p[f"{name}.1.weight"], p[f"{name}.1.bias"])
        return z

    def input_projection(self, x: Tensor) -> Tensor:
        """conv_x (and its LayerNorm) for every frame of x (B, T, Cin, H, W) at once."""
        b, t = x.shape[:2]
        z = self._conv(self._backend_for(x), self._params(), "conv_x",
                       x.reshape(b * t, *x.shape[2:]))
        return z.view(b, t, *z.shape[1:])

    def _step(self, backend, p, x, zx, h, c):
        if zx is None:
            zx = self._conv(backend, p, "conv_x", x)
        zh = self._conv(backend, p, "conv_h", h)
        if backend == "reference":  # CELLS.md section 5, as written
            i, f, g, o = torch.split(zx + zh, self.hidden_size, dim=1)
            c = torch.sigmoid(f + self.forget_bias) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        return self._gates(backend).convlstm(add_in_gate_order(zx, zh), c, None,
                                             self.forget_bias)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", kernel_size={self.kernel_size}"
                + (f", layer_norm=True, spatial_size={self.spatial_size}" if self.layer_norm
                   else "")
                + (f", forget_bias={self.forget_bias}" if self.forget_bias else "")
                + (", unused_convs=True" if self.unused_convs else ""))


def add_in_gate_order(zx: Tensor, zh: Tensor) -> Tensor:
    """``zx + zh`` with the gate blocks reordered from i, f, g, o to i, f, o, g.

    Each block's sum is written to its place in one new tensor (the layout of ``zh``), so
    the reorder is free: it is the addition every step does anyway. Under torch.compile
    the same expression as a concatenation (the compiler fuses it)."""
    if torch.compiler.is_compiling():
        C = zh.shape[1] // 4
        s = [zx[:, k * C:(k + 1) * C] + zh[:, k * C:(k + 1) * C] for k in range(4)]
        return torch.cat([s[0], s[1], s[3], s[2]], dim=1)
    return _AddInGateOrder.apply(zx, zh)


class _AddInGateOrder(torch.autograd.Function):
    @staticmethod
    def forward(ctx, zx, zh):
        C = zh.shape[1] // 4
        z = torch.empty_like(zh, dtype=torch.promote_types(zx.dtype, zh.dtype))
        torch.add(zx[:, :2 * C], zh[:, :2 * C], out=z[:, :2 * C])  # i, f
        torch.add(zx[:, 3 * C:], zh[:, 3 * C:], out=z[:, 2 * C:3 * C])  # o
        torch.add(zx[:, 2 * C:3 * C], zh[:, 2 * C:3 * C], out=z[:, 3 * C:])  # g
        return z

    @staticmethod
    def backward(ctx, grad):
        C = grad.shape[1] // 4
        g = torch.empty_like(grad)  # back to i, f, g, o; the same gradient for zx and zh
        g[:, :2 * C] = grad[:, :2 * C]
        g[:, 2 * C:3 * C] = grad[:, 3 * C:]
        g[:, 3 * C:] = grad[:, 2 * C:3 * C]
        return g, g
