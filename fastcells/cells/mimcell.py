"""MIM as the MS-LSTM authors implement it (mazhf/MS-RNN ``models/mim.py``, ``MIM_Cell``):
one cell holding a whole MIM layer, different from OpenSTL's ``MIMBlock`` + ``MIMN``
(:mod:`fastcells.cells.mim`):

- every convolution has a bias and there is no forget bias; gate order i, f, g(, o);
- the non-stationary module (state ``n``, input ``x - x_prev``) and the stationary module
  (state ``s``, input the former's output ``D``, hidden state the layer's ``c``) are
  LSTMs with *convolutional* output peepholes (``conv_n2o(n')``, ``conv_s2o(s')``) instead of
  OpenSTL's per-pixel ones, and the non-stationary gates read ``n`` itself, not a hidden state;
- the spatiotemporal memory ``m`` has its own input convolution (``conv_x2h_m``);
- in the first layer (``first_layer=True``, MS-RNN's ``l == 0``) ``c`` is a plain LSTM
  memory; ``n``, ``s`` and their outputs are still computed and carried, but unused.

No fused kernel computes this whole step; it composes the fused gate ops of the other cells
with the convolutions between them (see :meth:`MIMCell._step`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_nonempty, check_tensor
from ._conv import conv, conv_sum
from .base import CellBase
from .convlstm import _check_odd

# (name, reads: "x" (the input, Cin channels) or "C" (a state), gates) in MS-RNN's order of
# registration, so state_dict order is its order
_CONVS = (("conv_x2h_n", "x", 3), ("conv_n2h_n", "C", 3), ("conv_diff2o", "x", 1),
          ("conv_n2o", "C", 1), ("conv_x2h_s", "C", 4), ("conv_c2h_s", "C", 4),
          ("conv_s2o", "C", 1), ("conv_x2h", "x", 4), ("conv_h2h", "C", 4), ("conv_c2o", "C", 1),
          ("conv_x2h_m", "x", 3), ("conv_m2h_m", "C", 3), ("conv_m2o", "C", 1))


class MIMCell(CellBase):
    r"""MIM layer as in mazhf/MS-RNN's ``MIM_Cell``: non-stationary module ``n``, stationary
    module ``s``, LSTM memory ``c`` and spatiotemporal memory ``m`` (zigzag, as PredRNN).
    With :math:`d = x - x_{prev}` (the change of this layer's input since the last step):

    .. math::
        [i_n, f_n, g_n] &= W_{x2h\_n} * d + W_{n2h\_n} * n, \quad
        n' = \sigma(f_n) n + \sigma(i_n) \tanh(g_n)\\
        D &= \sigma(W_{diff2o} * d + W_{n2o} * n') \tanh(n')\\
        [i_s, f_s, g_s, o_s] &= W_{x2h\_s} * D + W_{c2h\_s} * c, \quad
        s' = \sigma(f_s) s + \sigma(i_s) \tanh(g_s)\\
        T &= \sigma(o_s + W_{s2o} * s') \tanh(s')\\
        [i, f, g, o] &= W_{x2h} * x + W_{h2h} * h, \quad
        c' = \begin{cases} \sigma(f) c + \sigma(i) \tanh(g) & \text{first layer}\\
                           T + \sigma(i) \tanh(g) & \text{otherwise} \end{cases}\\
        [i_m, f_m, g_m] &= W_{x2h\_m} * x + W_{m2h\_m} * m, \quad
        m' = \sigma(f_m) m + \sigma(i_m) \tanh(g_m)\\
        h' &= \sigma(o + W_{c2o} * c' + W_{m2o} * m') \tanh(W_{c\_m} * [c'; m'])

    All convolutions have kernel k ("same" padding) and a bias, but ``conv_c_m`` (1x1).

    Args:
        input_size: channels of ``x`` and ``x_prev`` (Cin; MS-RNN has Cin = C).
        hidden_size: channels of ``h``, ``c``, ``n``, ``s`` and ``m`` (C).
        kernel_size: odd kernel of every convolution but ``conv_c_m``.
        bias: biases on the convolutions (MS-RNN's have them).
        backend, memory_efficient: see :class:`fastcells.ConvLSTMCell`.

    Shapes:
        - x: (B, Cin, H, W)
        - x_prev: (B, Cin, H, W), the input of the previous step (MS-RNN's ``xt_1``: the
          layer below's previous hidden state); None means zeros
        - m: (B, C, H, W), the incoming spatiotemporal memory; None means zeros
        - state: ``(h, c, n, s)``, each (B, C, H, W); None means zeros
        - first_layer: MS-RNN's ``l == 0`` (c is then a plain LSTM memory)
        - returns ``(h, c, n, s, m)``, the new state and memory

    Parameters (MS-RNN's names without the leading underscore, in its order):
    ``conv_x2h_n`` (3C, Cin), ``conv_n2h_n`` (3C, C), ``conv_diff2o`` (C, Cin),
    ``conv_n2o`` (C, C), ``conv_x2h_s`` (4C, C), ``conv_c2h_s`` (4C, C), ``conv_s2o`` (C, C),
    ``conv_x2h`` (4C, Cin), ``conv_h2h`` (4C, C), ``conv_c2o`` (C, C), ``conv_x2h_m``
    (3C, Cin), ``conv_m2h_m`` (3C, C), ``conv_m2o`` (C, C), each (out, in, k, k), and
    ``conv_c_m`` (C, 2C, 1, 1).
    """

    state_names = ("h", "c", "n", "s")
    kind = "convlstm"  # the key of backends.AUTO_PREFERENCE: its gate ops are ConvLSTM's

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 3,
                 bias: bool = True, backend: str = "auto", memory_efficient: bool = False):
        super().__init__(input_size, hidden_size, backend, memory_efficient)
        _check_odd(kernel_size)
        self.kernel_size, self.padding = kernel_size, kernel_size // 2
        self._bias = bool(bias)
        C = hidden_size
        for name, reads, gates in _CONVS:
            setattr(self, name, nn.Conv2d(input_size if reads == "x" else C, gates * C,
                                          kernel_size, padding=self.padding, bias=bias))
        self.conv_c_m = nn.Conv2d(2 * C, C, 1, bias=bias)

    def forward(self, x: Tensor, x_prev: Tensor | None = None, m: Tensor | None = None,
                state=None, first_layer: bool = False):
        self.check_input(x)
        b, _, height, width = x.shape
        if x_prev is None:
            x_prev = torch.zeros_like(x)
        else:
            self._check_frame(x_prev, "x_prev", self.input_size, x)
        if m is None:
            m = x.new_zeros(b, self.hidden_size, height, width)
        else:
            self._check_frame(m, "m", self.hidden_size, x)
        state = self._resolve_state(x, state)
        # x_prev and m travel with the state so that the memory-efficient mode saves them as
        # inputs (and gives them gradients); _step unpacks them.
        return self._run(x, (x_prev, m, *state), first_layer=bool(first_layer))

    def _check_frame(self, t: Tensor, name: str, channels: int, x: Tensor) -> None:
        b, _, height, width = x.shape
        shape = (b, channels, height, width)
        check_tensor(t, name, shape, self._any_param())
        check_nonempty(t, name, shape)

    def _conv(self, backend: str, p: dict, name: str, t: Tensor) -> Tensor:
        w = p[f"{name}.weight"]
        return conv(backend, t, w, p.get(f"{name}.bias"), w.shape[-1] // 2)

    @staticmethod
    def _memory(gates, z: Tensor, c_prev: Tensor) -> Tensor:
        """``sigmoid(f) * c_prev + sigmoid(i) * tanh(g)`` for ``z`` = [i, f, g, ...], with the
        ConvLSTM gate op (no forget bias, no peephole; its gate order is i, f, o, g). Its
        ``sigmoid(o) * tanh(c)`` is not an output of this cell: g fills the o slot, and that
        h is dropped."""
        C = c_prev.shape[1]
        _, c = gates.convlstm(torch.cat((z[:, :3 * C], z[:, 2 * C:3 * C]), dim=1), c_prev,
                              None, 0.0)
        return c

    def _step(self, backend, p, x, zx, x_prev, m, h, c, n, s, first_layer=False):
        gates = self._gates(backend)
        C = self.hidden_size

        def cv(name, t):
            return self._conv(backend, p, name, t)

        def cv2(name1, t1, name2, t2):
            """cv(name1, t1) + cv(name2, t2); on the C++ backend as one convolution of
            [t1; t2] where its algorithm is not oneDNN (fastcells/ops/conv_sum.py)."""
            w1, w2 = p[f"{name1}.weight"], p[f"{name2}.weight"]
            if backend != "cpp" or w1.shape[2:] != w2.shape[2:]:
                return cv(name1, t1) + cv(name2, t2)
            b1, b2 = p.get(f"{name1}.bias"), p.get(f"{name2}.bias")
            bias = b1 if b2 is None else (b2 if b1 is None else b1 + b2)
            return conv_sum(backend, [t1, t2], [w1, w2], bias, w1.shape[-1] // 2)

        d = x - x_prev
        # non-stationary module: n' and its output D (output gate peeps at n' by convolution)
        z_n = cv2("conv_x2h_n", d, "conv_n2h_n", n)
        n = self._memory(gates, z_n, n)
        D = gates.output(cv("conv_diff2o", d), cv("conv_n2o", n), n)
        # stationary module: hidden state c, input D
        z_s = cv2("conv_x2h_s", D, "conv_c2h_s", c)
        s = self._memory(gates, z_s, s)
        T = gates.output(z_s[:, 3 * C:], cv("conv_s2o", s), s)
        z = cv2("conv_x2h", x, "conv_h2h", h)
        if first_layer:
            c = self._memory(gates, z, c)
        else:
            # T replaces the forget term: no gate op has this form, so it is eager
            c = T + torch.sigmoid(z[:, :C]) * torch.tanh(z[:, 2 * C:3 * C])
        z_m = cv2("conv_x2h_m", x, "conv_m2h_m", m)
        m = self._memory(gates, z_m, m)
        zl = conv(backend, torch.cat((c, m), dim=1), p["conv_c_m.weight"],
                  p.get("conv_c_m.bias"))
        h = gates.output(z[:, 3 * C:], cv2("conv_c2o", c, "conv_m2o", m),
                         zl)
        return h, c, n, s, m

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", kernel_size={self.kernel_size}"
                + ("" if self._bias else ", bias=False"))
