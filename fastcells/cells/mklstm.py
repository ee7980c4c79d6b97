"""Multi-kernel LSTM cell of MS-LSTM (Ma et al.), CELLS.md section 3."""
from __future__ import annotations

from torch import Tensor, nn

from ._conv import conv, conv_sum
from .base import CellBase
from .convlstm import _check_odd


class MKLSTMCell(CellBase):
    r"""MK-LSTM cell, as in mazhf/MS-RNN ``MK_LSTM_Cell``.

    Two ConvLSTM branches with kernels ``k1, k2`` (default 3 and 5), each with its own cell
    state, sharing one hidden state; gate order i, f, g, o in each branch::

        z_k  = Wx_k * x + Wh_k * h                    (k = k1, k2)
        c_k' = s(f_k) c_k + s(i_k) tanh(g_k)
        o    = s(o_k1 + o_k2 + Wco_k1 * c_k1' + Wco_k2 * c_k2')
        h'   = o * tanh(Wout * [c_k1'; c_k2'])        (Wout 1x1)

    All convolutions have bias.

    Args:
        input_size, hidden_size: Cin and C.
        kernel_sizes: the two odd branch kernels (k1, k2).
        backend, memory_efficient: see :class:`fastcells.ConvLSTMCell`.

    Shapes:
        - x: (B, Cin, H, W); state ``(h, c1, c2)`` (mazhf's ``[h, c_3, c_5]``), each
          (B, C, H, W); None means zeros. Returns the new ``(h, c1, c2)``.

    Parameters: ``conv_x2h.{0,1}`` (4C, Cin, k, k), ``conv_h2h.{0,1}`` (4C, C, k, k),
    ``conv_c2o.{0,1}`` (C, C, k, k), ``conv_out`` (C, 2C, 1, 1), index 0 for k1, 1 for k2.
    """

    state_names = ("h", "c1", "c2")
    kind = "mklstm"  # the key of backends.AUTO_PREFERENCE

    def __init__(self, input_size: int, hidden_size: int, kernel_sizes=(3, 5),
                 backend: str = "auto", memory_efficient: bool = False):
        super().__init__(input_size, hidden_size, backend, memory_efficient)
        if not isinstance(kernel_sizes, (tuple, list)) or len(kernel_sizes) != 2:
            raise ValueError(f"kernel_sizes: expected two odd kernel sizes like (3, 5), got "
                             f"{kernel_sizes!r}")
        for i, k in enumerate(kernel_sizes):
            _check_odd(k, f"kernel_sizes[{i}]")
        self.kernel_sizes = tuple(kernel_sizes)
        C = hidden_size

        def convs(cin, cout):
            return nn.ModuleList(nn.Conv2d(cin, cout, k, padding=k // 2) for k in self.kernel_sizes)

        self.conv_x2h = convs(input_size, 4 * C)
        self.conv_h2h = convs(C, 4 * C)
        self.conv_c2o = convs(C, C)
        self.conv_out = nn.Conv2d(2 * C, C, 1)

    def _conv(self, backend: str, p: dict, name: str, branch: int, x: Tensor) -> Tensor:
        return conv(backend, x, p[f"{name}.{branch}.weight"], p[f"{name}.{branch}.bias"],
                    self.kernel_sizes[branch] // 2)

    def input_projection(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Both input convolutions (with both biases) for every frame of x (B, T, Cin, H, W)."""
        b, t = x.shape[:2]
        flat, p, backend = x.reshape(b * t, *x.shape[2:]), self._params(), self._backend_for(x)
        return tuple(
            conv(backend, flat, p[f"conv_x2h.{k}.weight"],
                 p[f"conv_x2h.{k}.bias"] + p[f"conv_h2h.{k}.bias"],
                 self.kernel_sizes[k] // 2).view(b, t, -1, *x.shape[3:])
            for k in (0, 1))

    def _step(self, backend, p, x, zx, h, c1, c2):
        gates = self._gates(backend)
        if backend == "reference":
            z1, z2 = (self._conv(backend, p, "conv_x2h", k, x)
                      + self._conv(backend, p, "conv_h2h", k, h) for k in (0, 1))
        elif zx is None:
            # One convolution per branch over [x; h] where the fused CPU backend's Winograd
            # runs it, without keeping the concatenation (conv_sum); the input convolutions
            # carry both biases (CELLS.md allows summing them).
            z1, z2 = (conv_sum(backend, [x, h],
                               [p[f"conv_x2h.{k}.weight"], p[f"conv_h2h.{k}.weight"]],
                               p[f"conv_x2h.{k}.bias"] + p[f"conv_h2h.{k}.bias"],
                               self.kernel_sizes[k] // 2) for k in (0, 1))
        else:
            z1, z2 = (conv(backend, h, p[f"conv_h2h.{k}.weight"], None,
                           self.kernel_sizes[k] // 2).add_(zx[k]) for k in (0, 1))
        c1, c2, cc, o_partial = gates.mklstm(z1, z2, c1, c2)
        zo = self._conv(backend, p, "conv_c2o", 0, c1) + self._conv(backend, p, "conv_c2o", 1, c2)
        zl = conv(backend, cc, p["conv_out.weight"], p["conv_out.bias"])
        return gates.output(o_partial, zo, zl), c1, c2

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kernel_sizes={self.kernel_sizes}"
