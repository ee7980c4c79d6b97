"""chengtan9907/OpenSTL's PredRNN++ modules (openstl/modules/predrnnpp_modules.py):

- ``CausalLSTMCell(in_channel, num_hidden, height, width, filter_size, stride, layer_norm)``:
  ``forward(x_t, h_t, c_t, m_t) -> (h, c, m)``; bias-free convolutions in ``nn.Sequential``
  with an optional LayerNorm, and a ``conv_o`` it builds and never calls (kept: it is in the
  checkpoints).
- ``GHU(in_channel, num_hidden, height, width, filter_size, stride, layer_norm,
  initializer)``: ``forward(x, z) -> z``, zeros when z is None. It only runs with
  ``in_channel == num_hidden``, and not with ``layer_norm`` (its LayerNorm covers C channels
  of a 2C output): such modules fail the probe and are left alone.
"""
from __future__ import annotations

import torch
from torch import nn

from ..cells import CausalLSTMCell, GradientHighwayUnit
from .dropin import (
    DropIn,
    Family,
    Skip,
    expect_channels,
    odd_square_kernel,
    plain_leaf,
    randn,
    required_attrs,
    same_bias,
)


class OpenSTLCausalLSTMCell(DropIn, CausalLSTMCell):
    """Drop-in for OpenSTL's ``CausalLSTMCell``."""

    family = "OpenSTL CausalLSTMCell"

    def forward(self, x_t, h_t, c_t, m_t):
        """x_t (B, Cin, H, W); h_t, c_t, m_t (B, C, H, W). Returns ``(h, c, m)``."""
        self.check_input(x_t, "x_t")
        return self._run(x_t, self.check_state((h_t, c_t, m_t), x_t))


class OpenSTLGHU(DropIn, GradientHighwayUnit):
    """Drop-in for OpenSTL's ``GHU``."""

    family = "OpenSTL GHU"

    def forward(self, x, z):
        """x (B, C, H, W); z (B, C, H, W) or None (zeros). Returns the new z."""
        return GradientHighwayUnit.forward(self, x, z)


def _blocks(module: nn.Module, names) -> dict:
    """name -> (conv, LayerNorm or None) of the ``nn.Sequential(Conv2d[, LayerNorm])``
    attributes, after structural checks."""
    parts = {}
    for name in names:
        seq = getattr(module, name)
        if type(seq) is not nn.Sequential or len(seq) not in (1, 2):
            raise Skip(f"{name} is not an nn.Sequential of a Conv2d and an optional LayerNorm")
        norm = seq[1] if len(seq) == 2 else None
        if norm is not None:
            if type(norm) is not nn.LayerNorm:
                raise Skip(f"{name}[1] is {type(norm).__name__}, not nn.LayerNorm")
            plain_leaf(norm, f"{name}[1]")
        parts[name] = (seq[0], norm)
    return parts


def _kernel_and_norms(parts: dict) -> tuple[int, tuple | None]:
    kernels = {odd_square_kernel(conv, f"{name}[0]") for name, (conv, _) in parts.items()}
    if len(kernels) != 1:
        raise Skip(f"{'/'.join(parts)} have different kernels {sorted(kernels)}")
    norms = [norm for _, norm in parts.values()]
    spatial = None
    if any(n is not None for n in norms):
        if any(n is None for n in norms):
            raise Skip("a LayerNorm after some of the convolutions but not all")
        spatial = tuple(norms[0].normalized_shape[1:])
        for name, (conv, norm) in parts.items():
            if (len(norm.normalized_shape) != 3 or norm.normalized_shape[0] != conv.out_channels
                    or tuple(norm.normalized_shape[1:]) != spatial):
                raise Skip(f"{name}[1] normalizes {tuple(norm.normalized_shape)}, not "
                           f"(channels, H, W) of one spatial size")
            if not norm.elementwise_affine or norm.bias is None or norm.eps != 1e-5:
                raise Skip(f"{name}[1] is a LayerNorm without affine weight and bias or "
                           f"with eps {norm.eps} (fastcells: affine, eps 1e-5)")
    return kernels.pop(), spatial


# ----------------------------------------------------------------------------- CausalLSTMCell
_CAUSAL = {"conv_x": 7, "conv_h": 4, "conv_c": 3, "conv_m": 3, "conv_o": 1, "conv_c2m": 4,
           "conv_om": 1}


def convert_causal(module: nn.Module, backend: str, memory_efficient: bool = False):
    required_attrs(module, ("num_hidden", *_CAUSAL, "conv_last"))
    C = int(module.num_hidden)
    forget_bias = float(getattr(module, "_forget_bias", 1.0))
    parts = _blocks(module, _CAUSAL)
    cin = parts["conv_x"][0].in_channels
    kernel, spatial = _kernel_and_norms(parts)
    for name, (conv, _) in parts.items():
        expect_channels(conv, f"{name}[0]", {"conv_x": cin, "conv_o": 2 * C}.get(name, C),
                        _CAUSAL[name] * C)
    last = module.conv_last
    if odd_square_kernel(last, "conv_last") != 1:
        raise Skip("conv_last is not a 1x1 convolution")
    expect_channels(last, "conv_last", 2 * C, C)
    bias = same_bias({name: conv for name, (conv, _) in parts.items()} | {"conv_last": last})
    return OpenSTLCausalLSTMCell.adopt(
        module, {name: getattr(module, name) for name in (*_CAUSAL, "conv_last")}, backend,
        memory_efficient, input_size=cin, hidden_size=C, kernel_size=kernel, bias=bias,
        layer_norm=spatial is not None, spatial_size=spatial, unused_conv_o=True,
        forget_bias=forget_bias)


def _probe_size(module: nn.Module, name: str):
    seq = getattr(module, name)
    return tuple(seq[1].normalized_shape[1:]) if len(seq) == 2 else (5, 7)


def run_causal(module: nn.Module, gen: torch.Generator) -> list:
    h, w = _probe_size(module, "conv_x")
    C, b = module.num_hidden, 2
    x = randn(gen, b, module.conv_x[0].in_channels, h, w)
    return list(module(x, *(randn(gen, b, C, h, w) for _ in range(3))))


CAUSAL_LSTM = Family("OpenSTL CausalLSTMCell", "CausalLSTMCell",
                     ("num_hidden", "conv_x", "conv_c", "conv_c2m", "conv_om", "conv_last"),
                     convert_causal, run_causal)


# ----------------------------------------------------------------------------- GHU
_GHU = ("z_concat", "x_concat")


def convert_ghu(module: nn.Module, backend: str, memory_efficient: bool = False):
    required_attrs(module, ("num_hidden", *_GHU))
    C = int(module.num_hidden)
    parts = _blocks(module, _GHU)
    kernel, spatial = _kernel_and_norms(parts)
    for name, (conv, _) in parts.items():
        expect_channels(conv, f"{name}[0]", C, 2 * C)
    bias = same_bias({name: conv for name, (conv, _) in parts.items()})
    return OpenSTLGHU.adopt(module, {name: getattr(module, name) for name in _GHU}, backend,
                            memory_efficient, input_size=C, hidden_size=C, kernel_size=kernel,
                            bias=bias, layer_norm=spatial is not None, spatial_size=spatial)


def run_ghu(module: nn.Module, gen: torch.Generator) -> list:
    h, w = _probe_size(module, "x_concat")
    C, b = module.num_hidden, 2
    x = randn(gen, b, C, h, w)
    return [module(x, None), module(x, randn(gen, b, C, h, w))]


GHU = Family("OpenSTL GHU", "GHU", ("num_hidden", *_GHU), convert_ghu, run_ghu)
