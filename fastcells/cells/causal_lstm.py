"""PredRNN++'s causal LSTM and gradient highway unit (Wang et al. 2018), CELLS.md section 6."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_tensor
from ..ops.causal_lstm_gates import FORGET_BIAS
from ._conv import conv
from .base import CellBase
from .convlstm import _check_odd


def _spatial(layer_norm: bool, spatial_size):
    if isinstance(spatial_size, int):
        spatial_size = (spatial_size, spatial_size)
    if layer_norm and spatial_size is None:
        raise ValueError("spatial_size: layer_norm=True normalizes over (channels, H, W), "
                         "so spatial_size=(H, W) (or H) is required")
    return tuple(spatial_size) if (layer_norm and spatial_size) else None


class _ConvBlocks:
    """Convolutions stored as OpenSTL stores them: ``nn.Sequential(Conv2d[, LayerNorm])``."""

    def _block(self, cin: int, cout: int, bias: bool) -> nn.Sequential:
        conv = nn.Conv2d(cin, cout, self.kernel_size, padding=self.padding, bias=bias)
        if self.layer_norm:
            return nn.Sequential(conv, nn.LayerNorm([cout, *self.spatial_size]))
        return nn.Sequential(conv)

    def _conv(self, backend: str, p: dict, name: str, x: Tensor) -> Tensor:
        z = conv(backend, x, p[f"{name}.0.weight"], p.get(f"{name}.0.bias"), self.padding)
        if self.layer_norm:
            z = F.layer_norm(z, z.shape[1:], p[f"{name}.1.weight"], p[f"{name}.1.bias"])
        return z


class CausalLSTMCell(_ConvBlocks, CellBase):
    r"""Causal LSTM cell of PredRNN++, as in OpenSTL ``CausalLSTMCell``.

    The temporal memory ``c`` is updated first; the spatiotemporal memory ``m`` then reads
    the new ``c`` through ``conv_c2m`` (the cascade that makes the cell "causal"), and the
    output gate reads the new ``m`` through ``conv_om``::

        c' = s(f_x + f_h + f_c + fb) c + s(i_x + i_h + i_c) tanh(g_x + g_h + g_c)
        i'_c, g'_c, f'_c, o_c = split(conv_c2m(c'))
        m' = s(f'_x + f_m + f'_c + fb) tanh(m_m) + s(i'_x + i_m + i'_c) tanh(g'_x + g'_c)
        h' = tanh(o_x + o_h + o_c + conv_om(m')) * tanh(conv_last([c'; m']))

    OpenSTL's quirks, kept: the old spatiotemporal memory enters only through
    ``tanh(m_m)`` (a convolution of it, not m itself, is what the forget gate keeps); the
    output gate is a tanh, not a sigmoid; ``g'`` has no m term.

    Args:
        input_size: channels of ``x`` (Cin).
        hidden_size: channels of ``h``, ``c`` and ``m`` (C).
        kernel_size: odd kernel size of every convolution but the 1x1 ``conv_last``.
        bias: biases on all convolutions (OpenSTL has none).
        layer_norm: LayerNorm over (channels, H, W) after each convolution but
            ``conv_last``; it fixes the spatial size, so ``spatial_size`` is then required.
        spatial_size: ``H`` (square) or ``(H, W)``.
        unused_conv_o: also build ``conv_o`` (2C -> C, kernel k), which OpenSTL builds and
            never calls: its checkpoints and its published parameter counts include it.
        backend, memory_efficient: see :class:`fastcells.ConvLSTMCell`.
        forget_bias: added to both forget gates (OpenSTL: 1.0).

    Shapes:
        - x: (B, Cin, H, W)
        - state: ``(h, c, m)``, each (B, C, H, W), where ``m`` is the *incoming*
          spatiotemporal memory (from the layer below, or the top layer's previous step);
          None means zeros
        - returns the new ``(h, c, m)``

    Parameters (OpenSTL's names and shapes): ``conv_x.0`` (7C, Cin, k, k), ``conv_h.0``
    (4C, C, k, k), ``conv_c.0`` (3C, C, k, k), ``conv_m.0`` (3C, C, k, k), [``conv_o.0``
    (C, 2C, k, k)], ``conv_c2m.0`` (4C, C, k, k), ``conv_om.0`` (C, C, k, k), ``conv_last``
    (C, 2C, 1, 1); ``conv_*.1`` are the LayerNorms when ``layer_norm``.
    """

    state_names = ("h", "c", "m")
    kind = "causal_lstm"  # the key of backends.AUTO_PREFERENCE

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3, bias: bool = False,
                 layer_norm: bool = False, spatial_size=None, unused_conv_o: bool = False,
                 backend: str = "auto", memory_efficient: bool = False,
                 forget_bias: float = FORGET_BIAS):
        super().__init__(input_size, hidden_size, backend, memory_efficient)
        _check_odd(kernel_size)
        self.spatial_size = _spatial(layer_norm, spatial_size)
        self.kernel_size, self.padding = kernel_size, kernel_size // 2
        self.layer_norm, self.unused_conv_o = bool(layer_norm), bool(unused_conv_o)
        self.forget_bias = float(forget_bias)
        C = hidden_size
        # OpenSTL's definition order (the order of its state_dict keys)
        self.conv_x = self._block(input_size, 7 * C, bias)
        self.conv_h = self._block(C, 4 * C, bias)
        self.conv_c = self._block(C, 3 * C, bias)
        self.conv_m = self._block(C, 3 * C, bias)
        self.conv_o = self._block(2 * C, C, bias) if unused_conv_o else None
        self.conv_c2m = self._block(C, 4 * C, bias)
        self.conv_om = self._block(C, C, bias)
        self.conv_last = nn.Conv2d(2 * C, C, 1, bias=bias)

    def input_projection(self, x: Tensor) -> Tensor:
        """conv_x for every frame of x (B, T, Cin, H, W) at once."""
        b, t = x.shape[:2]
        z = self._conv(self._backend_for(x), self._params(), "conv_x",
                       x.reshape(b * t, *x.shape[2:]))
        return z.view(b, t, *z.shape[1:])

    def _step(self, backend, p, x, zx, h, c_prev, m_prev):
        gates, fb = self._gates(backend), self.forget_bias
        if zx is None:
            zx = self._conv(backend, p, "conv_x", x)
        c, o_partial, zp = gates.causal_c(zx, self._conv(backend, p, "conv_h", h),
                                          self._conv(backend, p, "conv_c", c_prev),
                                          self._conv(backend, p, "conv_m", m_prev), c_prev, fb)
        m, cm, o_sum = gates.causal_m(zp, self._conv(backend, p, "conv_c2m", c), c, o_partial, fb)
        zl = conv(backend, cm, p["conv_last.weight"], p.get("conv_last.bias"))
        return gates.causal_output(o_sum, self._conv(backend, p, "conv_om", m), zl), c, m

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", kernel_size={self.kernel_size}"
                + (f", layer_norm=True, spatial_size={self.spatial_size}" if self.layer_norm
                   else "")
                + (", unused_conv_o=True" if self.unused_conv_o else "")
                + (f", forget_bias={self.forget_bias}" if self.forget_bias != FORGET_BIAS
                   else ""))


class GradientHighwayUnit(_ConvBlocks, CellBase):
    r"""Gradient highway unit of PredRNN++, as in OpenSTL ``GHU``::

        p, u = split(x_concat(x) + z_concat(z), C)
        z' = s(u) * tanh(p) + (1 - s(u)) * z

    It sits between the first and second causal LSTM layers and gives the gradient a
    short path across time.

    Args:
        input_size: channels of ``x``; must equal ``hidden_size``, as in OpenSTL, whose
            ``z_concat`` reads a z of ``input_size`` channels that it mixes with the
            ``hidden_size``-channel update.
        hidden_size: channels of ``z`` (C).
        kernel_size: odd kernel size of both convolutions.
        bias: biases on both convolutions (OpenSTL has none).
        layer_norm: LayerNorm over (2C, H, W) after each convolution; needs
            ``spatial_size``. (OpenSTL's ``GHU(layer_norm=True)`` builds a LayerNorm over
            (C, H, W) for the 2C-channel output and crashes in its first forward.)
        spatial_size, backend, memory_efficient: see :class:`CausalLSTMCell`.

    Shapes:
        - x: (B, C, H, W); z: (B, C, H, W) or None (zeros, OpenSTL's ``_init_state``)
        - returns the new z (a tensor, as OpenSTL's ``GHU.forward``)

    Parameters (OpenSTL's names and order): ``z_concat.0`` (2C, C, k, k), ``x_concat.0``
    (2C, C, k, k); ``*.1`` the LayerNorms. OpenSTL initializes both weights uniformly in
    +-0.001; this cell keeps PyTorch's default initialization (the ``predrnn_pp`` model of
    the zoo applies OpenSTL's).
    """

    state_names = ("z",)
    kind = "ghu"  # the key of backends.AUTO_PREFERENCE

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3, bias: bool = False,
                 layer_norm: bool = False, spatial_size=None, backend: str = "auto",
                 memory_efficient: bool = False):
        super().__init__(input_size, hidden_size, backend, memory_efficient)
        if input_size != hidden_size:
            raise ValueError(f"input_size: the gradient highway unit mixes z (hidden_size "
                             f"channels) with its input's update, so input_size must equal "
                             f"hidden_size, got input_size={input_size}, "
                             f"hidden_size={hidden_size}")
        _check_odd(kernel_size)
        self.spatial_size = _spatial(layer_norm, spatial_size)
        self.kernel_size, self.padding = kernel_size, kernel_size // 2
        self.layer_norm = bool(layer_norm)
        C = hidden_size
        self.z_concat = self._block(C, 2 * C, bias)
        self.x_concat = self._block(C, 2 * C, bias)

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        self.check_input(x)
        if z is not None:
            b, _, h, w = x.shape
            check_tensor(z, "z", (b, self.hidden_size, h, w), self._any_param())
        return self._run(x, self._resolve_state(x, None if z is None else (z,)))[0]

    def _step(self, backend, p, x, zx, z_prev):
        if zx is None:
            zx = self._conv(backend, p, "x_concat", x)
        return (self._gates(backend).ghu(zx, self._conv(backend, p, "z_concat", z_prev), z_prev),)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", kernel_size={self.kernel_size}"
                + (f", layer_norm=True, spatial_size={self.spatial_size}" if self.layer_norm
                   else ""))
