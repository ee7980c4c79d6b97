"""Spatiotemporal LSTM cell of PredRNN (Wang et al. 2017), CELLS.md section 2."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.conv_sum import stacks
from ._conv import conv, conv_sum
from .base import CellBase
from .convlstm import _check_odd


class SpatioTemporalLSTMCell(CellBase):
    r"""ST-LSTM cell, as in thuml/predrnn-pytorch ``SpatioTemporalLSTMCell``.

    Two memories: the temporal ``c`` (carried along time in a layer) and the spatiotemporal
    ``m`` (arriving from the layer below at the same step, the zigzag flow). Forget bias 1 by
    default.

    Args:
        input_size: channels of ``x`` (Cin).
        hidden_size: channels of ``h``, ``c`` and ``m`` (C).
        kernel_size: odd kernel size of conv_x, conv_h, conv_m and conv_o.
        bias: biases on all five convolutions (thuml's current code has none).
        layer_norm: LayerNorm over (channels, H, W) after conv_x, conv_h, conv_m and conv_o;
            it fixes the spatial size, so ``spatial_size`` is then required.
        spatial_size: ``H`` (square) or ``(H, W)``.
        forget_bias: constant added to both forget gates' pre-activations: 1.0 in thuml's
            and OpenSTL's cells, 0.0 in MS-RNN's ``PredRNN_Cell``/``PredRNN_V2_Cell``.
        backend, memory_efficient: see :class:`fastcells.ConvLSTMCell`.

    Shapes:
        - x: (B, Cin, H, W)
        - state: ``(h, c, m)``, each (B, C, H, W), where ``m`` is the *incoming*
          spatiotemporal memory; None means zeros
        - returns the new ``(h, c, m)``; with ``return_deltas=True``,
          ``((h, c, m), (delta_c, delta_m))`` where ``delta_c = i*g`` and ``delta_m = i'*g'``
          (PredRNN-v2's decoupling loss reads them).

    Parameters (thuml's names and shapes): ``conv_x.0`` (7C, Cin, k, k), ``conv_h.0``
    (4C, C, k, k), ``conv_m.0`` (3C, C, k, k), ``conv_o.0`` (C, 2C, k, k), ``conv_last``
    (C, 2C, 1, 1); ``conv_*.1`` are the LayerNorms when ``layer_norm``.
    """

    state_names = ("h", "c", "m")
    kind = "stlstm"  # the key of backends.AUTO_PREFERENCE

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3, bias: bool = False,
                 layer_norm: bool = False, spatial_size=None, forget_bias: float = 1.0,
                 backend: str = "auto", memory_efficient: bool = False):
        super().__init__(input_size, hidden_size, backend, memory_efficient)
        _check_odd(kernel_size)
        if isinstance(spatial_size, int):
            spatial_size = (spatial_size, spatial_size)
        if layer_norm and spatial_size is None:
            raise ValueError("spatial_size: layer_norm=True normalizes over (channels, H, W), "
                             "so spatial_size=(H, W) (or H) is required")
        self.kernel_size, self.padding = kernel_size, kernel_size // 2
        self.layer_norm = bool(layer_norm)
        self.forget_bias = float(forget_bias)
        self.spatial_size = tuple(spatial_size) if (layer_norm and spatial_size) else None
        C = hidden_size

        def block(cin, cout):
            conv = nn.Conv2d(cin, cout, kernel_size, padding=self.padding, bias=bias)
            if layer_norm:
                return nn.Sequential(conv, nn.LayerNorm([cout, *self.spatial_size]))
            return nn.Sequential(conv)

        self.conv_x = block(input_size, 7 * C)
        self.conv_h = block(C, 4 * C)
        self.conv_m = block(C, 3 * C)
        self.conv_o = block(2 * C, C)
        self.conv_last = nn.Conv2d(2 * C, C, 1, bias=bias)

    def _conv(self, backend: str, p: dict, name: str, x: Tensor) -> Tensor:
        z = conv(backend, x, p[f"{name}.0.weight"], p.get(f"{name}.0.bias"), self.padding)
        if self.layer_norm:
            z = F.layer_norm(z, z.shape[1:], p[f"{name}.1.weight"], p[f"{name}.1.bias"])
        return z

    def input_projection(self, x: Tensor) -> Tensor:
        """conv_x for every frame of x (B, T, Cin, H, W) at once."""
        b, t = x.shape[:2]
        z = self._conv(self._backend_for(x), self._params(), "conv_x",
                       x.reshape(b * t, *x.shape[2:]))
        return z.view(b, t, *z.shape[1:])

    def forward(self, x: Tensor, state=None, return_deltas: bool = False):
        self.check_input(x)
        out = self._run(x, self._resolve_state(x, state), return_deltas=return_deltas)
        return ((out[:3], out[3:]) if return_deltas else out)

    def _summed_rows(self) -> tuple:
        """Rows of conv_x, conv_h / conv_m that make the gates' two sums MK-LSTM's layout:
        ``z1 = [Wx_ifgo, Wh] * [x; h]`` (i, f, g, o) and ``z2 = [Wx_i'f'g', Wm] * [x; m]``
        (i', f', g': no o block, which the MK-LSTM gate kernel allows)."""
        C = self.hidden_size
        return (list(range(3 * C)) + list(range(6 * C, 7 * C)), None), \
            (list(range(3 * C, 6 * C)), None)

    def _summed_biases(self, p: dict, like: Tensor) -> tuple[Tensor, Tensor]:
        """The biases of the two sums, the forget bias folded into their f rows."""
        C = self.hidden_size
        fb = like.new_zeros(4 * C)
        fb[C:2 * C] = self.forget_bias
        bx, bh, bm = (p.get(f"conv_{n}.0.bias") for n in "xhm")
        if bx is None:
            return fb, fb[:3 * C]
        return (fb + torch.cat([bx[:3 * C], bx[6 * C:]]) + bh,
                fb[:3 * C] + bx[3 * C:6 * C] + bm)

    def _step(self, backend, p, x, zx, h, c, m, return_deltas=False):
        gates = self._gates(backend)
        if backend == "cpp" and zx is None and not return_deltas and not self.layer_norm:
            rows1, rows2 = self._summed_rows()
            w1 = [p["conv_x.0.weight"], p["conv_h.0.weight"]]
            if stacks([x, h], w1, self.padding, rows1):
                # Where the autotuned convolution runs [x; h] off oneDNN (Winograd): two
                # convolutions of concatenations instead of three, whose output transforms
                # cover 7C channels instead of 14C (fastcells/ops/conv_sum.py).
                b1, b2 = self._summed_biases(p, x)
                z1 = conv_sum(backend, [x, h], w1, b1, self.padding, rows1)
                z2 = conv_sum(backend, [x, m], [p["conv_x.0.weight"], p["conv_m.0.weight"]],
                              b2, self.padding, rows2)
                c, m, cm, o_partial = gates.mklstm(z1, z2, c, m)
                zl = conv(backend, cm, p["conv_last.weight"], p.get("conv_last.bias"))
                return gates.output(o_partial, self._conv(backend, p, "conv_o", cm), zl), c, m
        if zx is None:
            zx = self._conv(backend, p, "conv_x", x)
        c, m, cm, o_partial, deltas = gates.stlstm(zx, self._conv(backend, p, "conv_h", h),
                                                   self._conv(backend, p, "conv_m", m), c, m,
                                                   return_deltas, self.forget_bias)
        zl = conv(backend, cm, p["conv_last.weight"], p.get("conv_last.bias"))
        h = gates.output(o_partial, self._conv(backend, p, "conv_o", cm), zl)
        return (h, c, m, *deltas) if return_deltas else (h, c, m)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", kernel_size={self.kernel_size}"
                + (f", layer_norm=True, spatial_size={self.spatial_size}" if self.layer_norm
                   else "")
                + (f", forget_bias={self.forget_bias}" if self.forget_bias != 1.0 else ""))
