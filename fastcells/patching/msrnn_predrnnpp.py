"""mazhf/MS-RNN's PredRNN++ cell (``models/predrnn_plus2.py``):
``PredRNN_Plus2_Cell(input_channel, output_channel, b_h_w, kernel_size, stride, padding)``,
``forward(x, m, hiddens, l) -> (h, next_m, [h, c, z])``, zeros when ``hiddens``/``m`` are
None, and the gradient highway unit inside the cell, run only when ``l == 1`` (its new z then
replaces x; ``z`` is None in the returned hiddens of every other layer).

Its causal LSTM is not OpenSTL's layout. Each gate stage is one biased convolution over a
concatenation, no forget bias (k: the kernel, C = input_channel = output_channel)::

    i, f, g    = split(_conv_x_h_c([x; h; c]))                    3C -> 3C, k
    c'         = s(f) c + s(i) tanh(g)
    i', f', g' = split(_conv_x_c_m([x; c'; m]))                   3C -> 3C, k
    m'         = s(f') tanh(_conv_m(m)) + s(i') tanh(g')          _conv_m: C -> C, 1x1
    o          = tanh(_conv_o([x; c'; m']))                       3C -> C, k
    h'         = o tanh(_conv_c_m([c'; m']))                      2C -> C, 1x1
    GHU (l == 1, before the above): p, s = split(_conv_x(x) + _conv_z(z)); z' = s(s) tanh(p)
    + (1 - s(s)) z; x = z'

Against fastcells' causal LSTM (CELLS.md section 6) that is: biases, no forget bias, no h
term in o (o_h = 0), m enters g' (g'_m, which OpenSTL's layout has no slot for), and m_m is
a 1x1 convolution. The drop-in runs the same three fused gate stages on MS-RNN's weights cut by
input channel (the convolution of a concatenation is the sum of the convolutions of its
parts), see :meth:`MSRNNPredRNNPlus2Cell._step`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_tensor
from ..cells import CausalLSTMCell
from ..cells._conv import conv as backend_conv
from .dropin import (
    PROBE_SHAPE,
    DropIn,
    Family,
    Skip,
    expect_channels,
    odd_square_kernel,
    randn,
    required_attrs,
    same_bias,
)
from .msrnn import _square_channels

# name: (input channels / C, output channels / C, kernel: "k" or 1), in MS-RNN's order
_CONVS = {"_conv_x_h_c": (3, 3, "k"), "_conv_x_c_m": (3, 3, "k"), "_conv_m": (1, 1, 1),
          "_conv_o": (3, 1, "k"), "_conv_c_m": (2, 1, 1), "_conv_x": (1, 2, "k"),
          "_conv_z": (1, 2, "k")}


class MSRNNPredRNNPlus2Cell(DropIn, CausalLSTMCell):
    """Drop-in for MS-RNN's PredRNN_Plus2_Cell (causal LSTM and, for ``l == 1``, GHU).

    The step is fastcells' causal LSTM (three fused gate stages) on MS-RNN's weights, read
    as fastcells' layout:

    - conv_x (7C: i, f, g, i', f', g', o) = the x columns of ``_conv_x_h_c``, ``_conv_x_c_m``,
      ``_conv_o``, with all three biases (each original convolution has one bias; it goes
      with its x part);
    - conv_h (4C: i, f, g, o) = the h columns of ``_conv_x_h_c`` and C zero rows (MS-RNN's o
      reads no h); conv_c = the c columns of ``_conv_x_h_c``;
    - zm (i_m, f_m, m_m) = the m columns of ``_conv_x_c_m`` (i', f' rows) and ``_conv_m(m)``
      (1x1); the g' row of those m columns, g'_m, is added to conv_c2m's g'_c slot (the two
      enter the same tanh);
    - conv_c2m (4C: i', g', f', o) = the c' columns of ``_conv_x_c_m`` and ``_conv_o``;
      conv_om = the m' columns of ``_conv_o``; conv_last = ``_conv_c_m``;
    - the GHU is the fused gradient-highway gate op on ``_conv_x(x)``, ``_conv_z(z)``.

    The weights are cut and concatenated inside each step (weight-sized copies; the
    parameters are MS-RNN's own, and the memory-efficient mode recomputes the copies).
    """

    family = "mazhf/MS-RNN PredRNN_Plus2_Cell"

    def forward(self, x, m, hiddens, l):  # noqa: E741 (MS-RNN's name: keyword calls)
        """x (B, C, H, W); m (B, C, H, W) or None (zeros); hiddens ``[h, c, z]`` or None
        (zeros of the size given at construction; z may be None when ``l != 1``); l the
        layer index (the GHU runs when ``l == 1``). Returns ``(h, m, [h, c, z])``, z None
        when ``l != 1``."""
        self.check_input(x)
        b = x.shape[0]
        if hiddens is None:
            # (the original makes float32 CUDA zeros; these follow x)
            zeros = x.new_zeros(b, self._input_channel, self._state_height, self._state_width)
            h, c, z = zeros, zeros, zeros
        else:
            h, c, z = hiddens
        if m is None:
            m = x.new_zeros(b, self._output_channel, self._state_height, self._state_width)
        state = self.check_state((h, c, m), x)
        if l == 1:
            check_tensor(z, "z", (b, self.hidden_size, *x.shape[2:]), x)
            h, c, m, z = self._run(x, (*state, z), ghu=True)
        else:
            h, c, m = self._run(x, state)
            z = None
        return h, m, [h, c, z]

    def _params(self) -> dict[str, Tensor]:
        return dict(self.named_parameters())  # MS-RNN's names; _step cuts them

    def _step(self, backend, p, x, zx, h, c_prev, m_prev, z_prev=None, ghu=False):
        gates, C, pad = self._gates(backend), self.hidden_size, self.padding

        def w(name):
            return p[f"{name}.weight"]

        def b(name):
            return p.get(f"{name}.bias")

        def conv(t, weight, bias=None, padding=pad):
            return backend_conv(backend, t, weight, bias, padding)

        if ghu:
            zg = conv(x, w("_conv_x"), b("_conv_x"))
            z_new = gates.ghu(zg, conv(z_prev, w("_conv_z"), b("_conv_z")), z_prev)
            x = z_new
        w_hc, w_cm, w_o = w("_conv_x_h_c"), w("_conv_x_c_m"), w("_conv_o")
        bias = b("_conv_x_h_c")
        # stage 1: c'
        wx = torch.cat((w_hc[:, :C], w_cm[:, :C], w_o[:, :C]))
        bx = None if bias is None else torch.cat((bias, b("_conv_x_c_m"), b("_conv_o")))
        zx = conv(x, wx, bx)
        zh = conv(h, torch.cat((w_hc[:, C:2 * C], w_hc.new_zeros(C, C, *w_hc.shape[2:]))))
        zc = conv(c_prev, w_hc[:, 2 * C:])
        zmk = conv(m_prev, w_cm[:, 2 * C:])  # i'_m, f'_m, g'_m
        zm = torch.cat((zmk[:, :2 * C], conv(m_prev, w("_conv_m"), b("_conv_m"), 0)), dim=1)
        c, o_partial, zp = gates.causal_c(zx, zh, zc, zm, c_prev, 0.0)
        # stage 2: m' (conv_c2m in OpenSTL's order i', g', f', o)
        w_c2m = torch.cat((w_cm[:C, C:2 * C], w_cm[2 * C:, C:2 * C], w_cm[C:2 * C, C:2 * C],
                           w_o[:, C:2 * C]))
        zc2m = conv(c, w_c2m)
        zc2m[:, C:2 * C] += zmk[:, 2 * C:]  # g'_m joins g'_c (conv2d keeps no output)
        m, cm, o_sum = gates.causal_m(zp, zc2m, c, o_partial, 0.0)
        # stage 3: h'
        zl = conv(cm, w("_conv_c_m"), b("_conv_c_m"), 0)
        h = gates.causal_output(o_sum, conv(m, w_o[:, 2 * C:]), zl)
        return (h, c, m, z_new) if ghu else (h, c, m)

    def input_projection(self, x: Tensor) -> Tensor:
        raise NotImplementedError("the MS-RNN drop-in runs step by step through its own "
                                  "forward(x, m, hiddens, l); it has no sequence layer")


def convert(module: nn.Module, backend: str, memory_efficient: bool = False):
    required_attrs(module, (*_CONVS, "_input_channel", "_output_channel", "_state_height",
                            "_state_width"))
    C = _square_channels(module)
    convs = {name: getattr(module, name) for name in _CONVS}
    kernels = {name: odd_square_kernel(conv, name) for name, conv in convs.items()}
    k = kernels["_conv_x_h_c"]
    for name, (cin, cout, kernel) in _CONVS.items():
        want = k if kernel == "k" else 1
        if kernels[name] != want:
            raise Skip(f"{name} has kernel {kernels[name]}, expected {want}")
        expect_channels(convs[name], name, cin * C, cout * C)
    return MSRNNPredRNNPlus2Cell.adopt(module, convs, backend, memory_efficient, input_size=C,
                                       hidden_size=C, kernel_size=k, bias=same_bias(convs),
                                       forget_bias=0.0)


def run(module: nn.Module, gen: torch.Generator) -> list:
    """Both branches: a layer without (l = 0) and with (l = 1) the GHU."""
    b, h, w, C = *PROBE_SHAPE, module._output_channel
    outputs = []
    for layer in (0, 1):
        x, m = randn(gen, b, module._input_channel, h, w), randn(gen, b, C, h, w)
        out, m, hiddens = module(x, m, [randn(gen, b, C, h, w) for _ in range(3)], layer)
        outputs += [out, m, *(t for t in hiddens if t is not None)]
    return outputs


FAMILY = Family("mazhf/MS-RNN PredRNN_Plus2_Cell", "PredRNN_Plus2_Cell",
                ("_conv_x_h_c", "_conv_x_c_m", "_conv_c_m", "_conv_z", "_input_channel"),
                convert, run)
