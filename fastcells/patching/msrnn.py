"""mazhf/MS-RNN's cells, all ``Cell(input_channel, output_channel, b_h_w, kernel_size, stride,
padding)`` with biased convolutions; their hidden convolutions read ``input_channel``
channels, so they only run with ``input_channel == output_channel``.

- ``MK_LSTM_Cell``: ``forward(x, hiddens) -> (output, [h, c_3, c_5])``, zeros when
  ``hiddens`` is None.
- ``ConvLSTM_Cell`` (``models/convlstm.py``): ``forward(x, hiddens) -> (output, [h, c])``;
  separate ``_conv_x2h``, ``_conv_h2h``, gate order i, f, g, o, no forget bias.
- ``PredRNN_Cell``, ``PredRNN_V2_Cell`` (``models/predrnn.py``, ``predrnn_v2.py``):
  ``forward(x, m, hiddens) -> (output, next_m, [h, c])`` (V2: ``..., delta_c, delta_m``); the
  ST-LSTM with separate convolutions for each source and no forget bias.
"""
from __future__ import annotations

import torch
from torch import nn

from ..cells import MKLSTMCell, SpatioTemporalLSTMCell, SplitConvLSTMCell
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

_BRANCHES = ("3", "5")
_ALIASES = {f"_conv_{kind}_{k}": f"conv_{kind}.{i}"
            for kind in ("x2h", "h2h", "c2o") for i, k in enumerate(_BRANCHES)}
_ALIASES["_conv_out"] = "conv_out"


class MSRNNMKLSTMCell(DropIn, MKLSTMCell):
    """Drop-in for MS-RNN's MK_LSTM_Cell (branch convolutions ``_conv_*_3``/``_conv_*_5``)."""

    family = "mazhf/MS-RNN MK_LSTM_Cell"
    _module_aliases = _ALIASES

    def forward(self, x, hiddens):
        """x (B, C, H, W); hiddens ``[h, c_3, c_5]`` each (B, C, H, W) or None (zeros of the
        size given at construction). Returns ``(h, [h, c_3, c_5])``."""
        self.check_input(x)
        if hiddens is None:
            zeros = torch.zeros(x.shape[0], self._input_channel, self._state_height,
                                self._state_width, dtype=x.dtype, device=x.device)
            hiddens = (zeros, zeros, zeros)
        h, c3, c5 = self._run(x, self.check_state(tuple(hiddens), x))
        return h, [h, c3, c5]


def convert(module: nn.Module, backend: str, memory_efficient: bool = False):
    required_attrs(module, (*_ALIASES, "_input_channel", "_output_channel"))
    C = cin = _square_channels(module)
    convs = {name: getattr(module, name) for name in _ALIASES}
    kernels = {name: odd_square_kernel(m, name) for name, m in convs.items()}
    k3, k5 = kernels["_conv_x2h_3"], kernels["_conv_x2h_5"]
    for kind in ("x2h", "h2h", "c2o"):
        for b, k in zip(_BRANCHES, (k3, k5)):
            name = f"_conv_{kind}_{b}"
            if kernels[name] != k:
                raise Skip(f"{name} has kernel {kernels[name]}, its branch {k}")
            expect_channels(convs[name], name, C, C if kind == "c2o" else 4 * C)
    if kernels["_conv_out"] != 1:
        raise Skip("_conv_out is not a 1x1 convolution")
    expect_channels(convs["_conv_out"], "_conv_out", 2 * C, C)
    if not same_bias(convs):
        raise Skip("bias-free convolutions; MS-RNN's (and fastcells') MK-LSTM has biases")
    return MSRNNMKLSTMCell.adopt(module, convs, backend, memory_efficient, input_size=cin,
                                 hidden_size=C, kernel_sizes=(k3, k5))


def run(module: nn.Module, gen: torch.Generator) -> list:
    b, h, w, C = *PROBE_SHAPE, module._output_channel
    out, hiddens = module(randn(gen, b, module._input_channel, h, w),
                          [randn(gen, b, C, h, w) for _ in range(3)])
    return [out, *hiddens]


FAMILY = Family("mazhf/MS-RNN MK_LSTM_Cell", "MK_LSTM_Cell",
                ("_conv_x2h_3", "_conv_h2h_3", "_conv_x2h_5", "_conv_h2h_5"), convert, run)


# -- ConvLSTM_Cell ------------------------------------------------------------------------------
class MSRNNConvLSTMCell(DropIn, SplitConvLSTMCell):
    """Drop-in for MS-RNN's ConvLSTM_Cell (``models/convlstm.py``): biased ``_conv_x2h``,
    ``_conv_h2h``, gate order i, f, g, o, no forget bias."""

    family = "mazhf/MS-RNN ConvLSTM_Cell"
    _module_aliases = {"_conv_x2h": "conv_x.0", "_conv_h2h": "conv_h.0"}

    def forward(self, x, hiddens):
        """x (B, C, H, W); hiddens ``[h, c]`` each (B, C, H, W) or None (zeros of the size
        given at construction). Returns ``(h, [h, c])``."""
        self.check_input(x)
        if hiddens is None:
            # (the original makes float32 CUDA zeros; these follow x)
            zeros = torch.zeros(x.shape[0], self._input_channel, self._state_height,
                                self._state_width, dtype=x.dtype, device=x.device)
            hiddens = (zeros, zeros)
        h, c = self._run(x, self.check_state(tuple(hiddens), x))
        return h, [h, c]


def _square_channels(module: nn.Module) -> int:
    """MS-RNN's hidden convolutions read ``input_channel`` channels: the cells only run with
    ``input_channel == output_channel``."""
    cin, C = int(module._input_channel), int(module._output_channel)
    if cin != C:
        raise Skip(f"input_channel {cin} != output_channel {C}: the original's h2h "
                   f"convolution cannot read its own hidden state")
    return C


def convert_convlstm(module: nn.Module, backend: str, memory_efficient: bool = False):
    names = tuple(MSRNNConvLSTMCell._module_aliases)
    required_attrs(module, (*names, "_input_channel", "_output_channel"))
    C = _square_channels(module)
    convs = {name: getattr(module, name) for name in names}
    kernels = {odd_square_kernel(m, name) for name, m in convs.items()}
    if len(kernels) != 1:
        raise Skip(f"_conv_x2h and _conv_h2h have different kernels {sorted(kernels)}")
    for name, m in convs.items():
        expect_channels(m, name, C, 4 * C)
    return MSRNNConvLSTMCell.adopt(module, convs, backend, memory_efficient, input_size=C,
                                   hidden_size=C, kernel_size=kernels.pop(),
                                   bias=same_bias(convs))


def run_convlstm(module: nn.Module, gen: torch.Generator) -> list:
    b, h, w, C = *PROBE_SHAPE, module._output_channel
    out, hiddens = module(randn(gen, b, module._input_channel, h, w),
                          [randn(gen, b, C, h, w) for _ in range(2)])
    return [out, *hiddens]


CONVLSTM = Family("mazhf/MS-RNN ConvLSTM_Cell", "ConvLSTM_Cell",
                  ("_conv_x2h", "_conv_h2h", "_input_channel", "_output_channel"),
                  convert_convlstm, run_convlstm)


# -- PredRNN_Cell, PredRNN_V2_Cell --------------------------------------------------------------
_PREDRNN_CONVS = {  # name: (output channels / C, input channels / C or "in"), all biased
    "_conv_x2h": (4, "in"), "_conv_h2h": (4, 1), "_conv_c2o": (1, 1),
    "_conv_x2h_m": (3, "in"), "_conv_m2h_m": (3, 1), "_conv_m2o": (1, 1), "_conv_c_m": (1, 2)}


class MSRNNPredRNNCell(DropIn, SpatioTemporalLSTMCell):
    """Drop-in for MS-RNN's PredRNN_Cell and PredRNN_V2_Cell (``models/predrnn.py``,
    ``predrnn_v2.py``): the ST-LSTM with biased convolutions, no forget bias, and its own
    split of the weights, which the step reads as fastcells' layout (CELLS.md section 2):

    - conv_x (i, f, g, i', f', g', o) = ``_conv_x2h`` (i, f, g, o) and ``_conv_x2h_m``
      (i', f', g'), output channels interleaved;
    - conv_o over ``[c; m]`` = ``_conv_c2o`` on c plus ``_conv_m2o`` on m (input channels
      concatenated, biases summed); conv_h, conv_m, conv_last are ``_conv_h2h``,
      ``_conv_m2h_m``, ``_conv_c_m``.

    The concatenated weights are made for each step (a weight-sized copy that autograd keeps
    for that step's backward; the parameters themselves are MS-RNN's)."""

    family = "mazhf/MS-RNN PredRNN_Cell"
    returns_deltas = False

    def forward(self, x, m, hiddens):
        """x (B, C, H, W); m (B, C, H, W) or None; hiddens ``[h, c]`` or None (zeros of the
        size given at construction). Returns ``(h, m, [h, c])``, and ``delta_c, delta_m``
        after them for PredRNN_V2_Cell."""
        self.check_input(x)
        b = x.shape[0]
        if hiddens is None:
            zeros = x.new_zeros(b, self._input_channel, self._state_height, self._state_width)
            hiddens = (zeros, zeros)
        h, c = hiddens
        if m is None:
            m = x.new_zeros(b, self._output_channel, self._state_height, self._state_width)
        out = self._run(x, self.check_state((h, c, m), x), return_deltas=self.returns_deltas)
        h, c, m = out[:3]
        return (h, m, [h, c], *out[3:])

    def _params(self) -> dict:
        C = self.hidden_size
        x2h, x2h_m = self._conv_x2h, self._conv_x2h_m
        c2o, m2o = self._conv_c2o, self._conv_m2o
        return {
            "conv_x.0.weight": torch.cat([x2h.weight[:3 * C], x2h_m.weight, x2h.weight[3 * C:]]),
            "conv_x.0.bias": torch.cat([x2h.bias[:3 * C], x2h_m.bias, x2h.bias[3 * C:]]),
            "conv_h.0.weight": self._conv_h2h.weight, "conv_h.0.bias": self._conv_h2h.bias,
            "conv_m.0.weight": self._conv_m2h_m.weight, "conv_m.0.bias": self._conv_m2h_m.bias,
            "conv_o.0.weight": torch.cat([c2o.weight, m2o.weight], dim=1),
            "conv_o.0.bias": c2o.bias + m2o.bias,
            "conv_last.weight": self._conv_c_m.weight, "conv_last.bias": self._conv_c_m.bias,
        }


def convert_predrnn(module: nn.Module, backend: str, memory_efficient: bool = False,
                    deltas: bool = False):
    required_attrs(module, (*_PREDRNN_CONVS, "_input_channel", "_output_channel"))
    C = _square_channels(module)
    convs = {name: getattr(module, name) for name in _PREDRNN_CONVS}
    kernels = {name: odd_square_kernel(m, name) for name, m in convs.items()}
    k = kernels["_conv_x2h"]
    for name, (out, cin) in _PREDRNN_CONVS.items():
        want = 1 if name == "_conv_c_m" else k
        if kernels[name] != want:
            raise Skip(f"{name} has kernel {kernels[name]}, expected {want}")
        expect_channels(convs[name], name, C if cin == "in" else cin * C, out * C)
    if not same_bias(convs):
        raise Skip("bias-free convolutions; MS-RNN's PredRNN cells have biases")
    cell = MSRNNPredRNNCell.adopt(module, convs, backend, memory_efficient, input_size=C,
                                  hidden_size=C, kernel_size=k, bias=True, forget_bias=0.0)
    cell.returns_deltas = deltas
    if deltas:
        cell.family = "mazhf/MS-RNN PredRNN_V2_Cell"
    return cell


def convert_predrnn_v2(module: nn.Module, backend: str, memory_efficient: bool = False):
    return convert_predrnn(module, backend, memory_efficient, deltas=True)


def run_predrnn(module: nn.Module, gen: torch.Generator) -> list:
    b, h, w, C = *PROBE_SHAPE, module._output_channel
    x, m = randn(gen, b, module._input_channel, h, w), randn(gen, b, C, h, w)
    out = module(x, m, [randn(gen, b, C, h, w) for _ in range(2)])
    return [out[0], out[1], *out[2], *out[3:]]


_PREDRNN_MARKERS = ("_conv_x2h", "_conv_x2h_m", "_conv_m2h_m", "_conv_c_m", "_input_channel")
PREDRNN = Family("mazhf/MS-RNN PredRNN_Cell", "PredRNN_Cell", _PREDRNN_MARKERS,
                 convert_predrnn, run_predrnn)
PREDRNN_V2 = Family("mazhf/MS-RNN PredRNN_V2_Cell", "PredRNN_V2_Cell", _PREDRNN_MARKERS,
                    convert_predrnn_v2, run_predrnn)
