"""mazhf/MS-RNN ``MIM_Cell(input_channel, output_channel, b_h_w, kernel_size, stride,
padding)`` (``models/mim.py``, also in ``models/ms_mim.py``): ``forward(x, xt_1, m, hiddens,
l) -> (output, next_m, [h, c, n, s])``, where ``l`` is the layer index (``l == 0``: the first
layer's plain LSTM memory) and None means zeros (``hiddens``: of ``input_channel`` channels
and the size given at construction; ``xt_1``, ``m``: of ``output_channel`` channels). Its
convolutions that read the states are built for ``input_channel`` inputs, so the cell only
runs with ``input_channel == output_channel``. The original makes those zeros as float32 CUDA
tensors; the drop-in makes them like ``x``. A different cell from OpenSTL's MIM: see
:class:`fastcells.MIMCell`."""
from __future__ import annotations

import torch
from torch import nn

from ..cells import MIMCell
from ..cells.mimcell import _CONVS
from .dropin import (
    DropIn,
    Family,
    Skip,
    expect_channels,
    odd_square_kernel,
    randn,
    required_attrs,
    same_bias,
)

_ALIASES = {f"_{name}": name for name, _, _ in _CONVS} | {"_conv_c_m": "conv_c_m"}


class MSRNNMIMCell(DropIn, MIMCell):
    """Drop-in for MS-RNN's MIM_Cell (convolutions ``_conv_*``)."""

    family = "mazhf/MS-RNN MIM_Cell"
    _module_aliases = _ALIASES

    def forward(self, x, xt_1, m, hiddens, l):  # noqa: E741 (MS-RNN's name)
        """x (B, C, H, W); xt_1, m (B, C, H, W) or None; hiddens ``[h, c, n, s]`` each
        (B, C, H, W) or None; l the layer index. Returns ``(h, m, [h, c, n, s])``."""
        self.check_input(x)
        if hiddens is None:
            zeros = self._zeros(x, self._input_channel)
            hiddens = (zeros, zeros, zeros, zeros)
        if xt_1 is None:
            xt_1 = self._zeros(x, self._output_channel)
        if m is None:
            m = self._zeros(x, self._output_channel)
        h, c, n, s, m = MIMCell.forward(self, x, xt_1, m, tuple(hiddens), first_layer=l == 0)
        return h, m, [h, c, n, s]

    def _zeros(self, x, channels):
        return torch.zeros(x.shape[0], channels, self._state_height, self._state_width,
                           dtype=x.dtype, device=x.device)


def convert(module: nn.Module, backend: str, memory_efficient: bool = False):
    required_attrs(module, (*_ALIASES, "_input_channel", "_output_channel", "_state_height",
                            "_state_width"))
    cin, C = int(module._input_channel), int(module._output_channel)
    if cin != C:
        raise Skip(f"input_channel {cin} != output_channel {C}: the original's state "
                   f"convolutions cannot read its own states")
    convs = {name: getattr(module, name) for name in _ALIASES}
    kernels = {odd_square_kernel(m, name) for name, m in convs.items() if name != "_conv_c_m"}
    if len(kernels) != 1:
        raise Skip(f"its convolutions have different kernels {sorted(kernels)}")
    for name, _, gates in _CONVS:
        expect_channels(convs[f"_{name}"], f"_{name}", C, gates * C)
    if odd_square_kernel(convs["_conv_c_m"], "_conv_c_m") != 1:
        raise Skip("_conv_c_m is not a 1x1 convolution")
    expect_channels(convs["_conv_c_m"], "_conv_c_m", 2 * C, C)
    return MSRNNMIMCell.adopt(module, convs, backend, memory_efficient, input_size=cin,
                              hidden_size=C, kernel_size=kernels.pop(), bias=same_bias(convs))


def run(module: nn.Module, gen: torch.Generator) -> list:
    """A first-layer call (l = 0), then a higher layer's (l = 1) on its outputs, with every
    input given (the original makes missing ones on CUDA)."""
    b, h, w, C = 1, 4, 5, int(module._output_channel)

    def frame():
        return randn(gen, b, C, h, w)

    out, m, hiddens = module(frame(), frame(), frame(), [frame() for _ in range(4)], 0)
    outputs = [out, m, *hiddens]
    out, m, hiddens = module(frame(), frame(), m, hiddens, 1)
    return [*outputs, out, m, *hiddens]


FAMILY = Family("mazhf/MS-RNN MIM_Cell", "MIM_Cell",
                ("_conv_x2h_n", "_conv_n2h_n", "_conv_diff2o", "_conv_x2h_s", "_conv_c2h_s",
                 "_conv_c_m"), convert, run)
