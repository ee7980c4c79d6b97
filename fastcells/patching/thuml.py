"""thuml/predrnn-pytorch ``SpatioTemporalLSTMCell(in_channel, num_hidden, width, filter_size,
stride, layer_norm)``: ``forward(x_t, h_t, c_t, m_t) -> (h, c, m)``; PredRNN-v2's cell
returns ``(h, c, m, delta_c, delta_m)``. Both the current code (bias-free convs in
``nn.Sequential``, optional LayerNorm) and the older one (biased convs, LayerNorm always)."""
from __future__ import annotations

import torch
from torch import nn

from ..cells import SpatioTemporalLSTMCell
from .dropin import (
    PROBE_SHAPE,
    DropIn,
    Family,
    Skip,
    count_outputs,
    expect_channels,
    odd_square_kernel,
    plain_leaf,
    randn,
    required_attrs,
    same_bias,
)


class ThumlSpatioTemporalLSTMCell(DropIn, SpatioTemporalLSTMCell):
    """Drop-in for thuml's ST-LSTM cell (PredRNN, and PredRNN-v2 when ``returns_deltas``)."""

    family = "thuml/predrnn-pytorch SpatioTemporalLSTMCell"
    returns_deltas = False

    def forward(self, x_t, h_t, c_t, m_t):
        """x_t (B, Cin, H, W); h_t, c_t, m_t (B, C, H, W). Returns ``(h, c, m)``, and
        ``delta_c, delta_m`` after them for the PredRNN-v2 cell."""
        self.check_input(x_t, "x_t")
        state = self.check_state((h_t, c_t, m_t), x_t)
        return self._run(x_t, state, return_deltas=self.returns_deltas)


_CONVS = {"conv_x": 7, "conv_h": 4, "conv_m": 3, "conv_o": 1}


def _parts(module: nn.Module):
    """conv_x/h/m/o as (conv, layer_norm or None) after structural checks."""
    parts = {}
    for name in _CONVS:
        seq = getattr(module, name)
        if type(seq) is not nn.Sequential or len(seq) not in (1, 2):
            raise Skip(f"{name} is not an nn.Sequential of a Conv2d and an optional LayerNorm")
        norm = seq[1] if len(seq) == 2 else None
        if norm is not None and type(norm) is not nn.LayerNorm:
            raise Skip(f"{name}[1] is {type(norm).__name__}, not nn.LayerNorm")
        if norm is not None:
            plain_leaf(norm, f"{name}[1]")
        parts[name] = (seq[0], norm)
    return parts


def convert(module: nn.Module, backend: str, memory_efficient: bool = False):
    required_attrs(module, ("num_hidden", "conv_x", "conv_h", "conv_m", "conv_o", "conv_last"))
    C = int(module.num_hidden)
    if float(getattr(module, "_forget_bias", 1.0)) != 1.0:
        raise Skip(f"_forget_bias is {module._forget_bias}; the ST-LSTM forget bias is 1.0")
    parts = _parts(module)
    cin = parts["conv_x"][0].in_channels
    kernels = {odd_square_kernel(conv, f"{name}[0]") for name, (conv, _) in parts.items()}
    if len(kernels) != 1:
        raise Skip(f"conv_x/h/m/o have different kernels {sorted(kernels)}")
    for name, (conv, _) in parts.items():
        expect_channels(conv, f"{name}[0]", {"conv_x": cin, "conv_o": 2 * C}.get(name, C),
                        _CONVS[name] * C)
    last = module.conv_last
    if odd_square_kernel(last, "conv_last") != 1:
        raise Skip("conv_last is not a 1x1 convolution")
    expect_channels(last, "conv_last", 2 * C, C)
    same_bias({name: conv for name, (conv, _) in parts.items()} | {"conv_last": last})
    norms = [norm for _, norm in parts.values()]
    spatial = None
    if any(n is not None for n in norms):
        if any(n is None for n in norms):
            raise Skip("LayerNorm after some of conv_x/h/m/o but not all")
        spatial = tuple(norms[0].normalized_shape[1:])
        for (name, (conv, norm)) in parts.items():
            if (len(norm.normalized_shape) != 3 or norm.normalized_shape[0] != conv.out_channels
                    or tuple(norm.normalized_shape[1:]) != spatial):
                raise Skip(f"{name}[1] normalizes {tuple(norm.normalized_shape)}, not "
                           f"(channels, H, W) of one spatial size")
            if not norm.elementwise_affine or norm.bias is None or norm.eps != 1e-5:
                raise Skip(f"{name}[1] is a LayerNorm without affine weight and bias or "
                           f"with eps {norm.eps} (fastcells: affine, eps 1e-5)")
    cell = ThumlSpatioTemporalLSTMCell.adopt(
        module, {name: getattr(module, name) for name in (*_CONVS, "conv_last")}, backend,
        memory_efficient, input_size=cin, hidden_size=C, kernel_size=kernels.pop(),
        layer_norm=spatial is not None, spatial_size=spatial)
    cell.returns_deltas = _output_count(module) == 5
    return cell


def _probe_size(module: nn.Module):
    """(batch, H, W) of the probe, unless the LayerNorms fix H and W."""
    norm = module.conv_x[1] if len(module.conv_x) == 2 else None
    return (1, *norm.normalized_shape[1:]) if norm is not None else PROBE_SHAPE


def run(module: nn.Module, gen: torch.Generator) -> list:
    b, h, w = _probe_size(module)
    C = module.num_hidden
    x = randn(gen, b, module.conv_x[0].in_channels, h, w)
    return list(module(x, *(randn(gen, b, C, h, w) for _ in range(3))))


def _output_count(module: nn.Module) -> int:
    """3 for PredRNN's cell, 5 for PredRNN-v2's (which adds delta_c, delta_m)."""
    try:
        n = count_outputs(module, run)
    except Exception as e:
        raise Skip(f"its forward failed on a probe input ({type(e).__name__}: {e})") from e
    if n not in (3, 5):
        raise Skip(f"its forward returns {n} values; PredRNN's cell returns 3, PredRNN-v2's 5")
    return n


FAMILY = Family("thuml/predrnn-pytorch SpatioTemporalLSTMCell", "SpatioTemporalLSTMCell",
                ("num_hidden", "conv_x", "conv_h", "conv_m", "conv_last"), convert, run,
                probe_small_norms=True)
