"""chengtan9907/OpenSTL's recurrent cells that fastcells' existing cells compute.

- ``ConvLSTMCell(in_channel, num_hidden, height, width, filter_size, stride, layer_norm)``
  (``openstl/modules/convlstm_modules.py``): ``forward(x_t, h_t, c_t) -> (h_new, c_new)``.
  Bias-free ``conv_x``, ``conv_h`` (each an ``nn.Sequential`` of a Conv2d and, with
  ``layer_norm``, a LayerNorm over (4C, H, W)), gate order i, f, g, o, no forget bias (its
  ``_forget_bias`` is never read); ``conv_o`` and ``conv_last`` are built and never called.
  It shares its class name with ndrplz's and NVlabs' cells; the attributes tell them apart.
- ``SpatioTemporalLSTMCellv2`` (``predrnnv2_modules.py``): thuml's PredRNN-v2 cell under
  another name, returning ``(h, c, m, delta_c, delta_m)``. (OpenSTL's PredRNN cell,
  ``SpatioTemporalLSTMCell``, is thuml's and converts as thuml's.)
- PhyDNet's ``PhyD_ConvLSTM_Cell(input_shape, input_dim, hidden_dim, kernel_size, bias)``
  (``phydnet_modules.py``): ndrplz's cell with other names,
  ``forward(x, hidden) -> (h_next, c_next)``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..cells import ConvLSTMCell, SplitConvLSTMCell
from . import thuml
from .dropin import (
    PROBE_SHAPE,
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
from .ndrplz import convert_one_conv


class OpenSTLConvLSTMCell(DropIn, SplitConvLSTMCell):
    """Drop-in for OpenSTL's ConvLSTMCell (its unused ``conv_o``/``conv_last`` adopted)."""

    family = "chengtan9907/OpenSTL ConvLSTMCell"

    def forward(self, x_t, h_t, c_t):
        """x_t (B, Cin, H, W); h_t, c_t (B, C, H, W). Returns ``(h_new, c_new)``."""
        self.check_input(x_t, "x_t")
        return self._run(x_t, self.check_state((h_t, c_t), x_t))


def sequential_conv(module: nn.Module, name: str):
    """``name`` as (conv, LayerNorm or None): an ``nn.Sequential`` of a Conv2d and an
    optional LayerNorm, the form of OpenSTL's (and thuml's) convolutions."""
    seq = getattr(module, name)
    if type(seq) is not nn.Sequential or len(seq) not in (1, 2):
        raise Skip(f"{name} is not an nn.Sequential of a Conv2d and an optional LayerNorm")
    norm = seq[1] if len(seq) == 2 else None
    if norm is not None:
        if type(norm) is not nn.LayerNorm:
            raise Skip(f"{name}[1] is {type(norm).__name__}, not nn.LayerNorm")
        plain_leaf(norm, f"{name}[1]")
    return seq[0], norm


def check_layer_norms(parts: dict) -> tuple | None:
    """The (H, W) the LayerNorms of ``parts`` (name -> (conv, norm)) fix, or None without
    them; raises Skip unless all or none have one, each over (channels, H, W) of one size,
    affine, eps 1e-5 (what fastcells' cells apply)."""
    norms = [norm for _, norm in parts.values()]
    if all(n is None for n in norms):
        return None
    if any(n is None for n in norms):
        raise Skip(f"LayerNorm after some of {'/'.join(parts)} but not all")
    spatial = tuple(norms[0].normalized_shape[1:])
    for name, (conv, norm) in parts.items():
        if (len(norm.normalized_shape) != 3 or norm.normalized_shape[0] != conv.out_channels
                or tuple(norm.normalized_shape[1:]) != spatial):
            raise Skip(f"{name}[1] normalizes {tuple(norm.normalized_shape)}, not "
                       f"(channels, H, W) of one spatial size")
        if not norm.elementwise_affine or norm.bias is None or norm.eps != 1e-5:
            raise Skip(f"{name}[1] is a LayerNorm without affine weight and bias or with eps "
                       f"{norm.eps} (fastcells: affine, eps 1e-5)")
    return spatial


def convert_convlstm(module: nn.Module, backend: str, memory_efficient: bool = False):
    required_attrs(module, ("num_hidden", "conv_x", "conv_h", "conv_o", "conv_last"))
    C = int(module.num_hidden)
    parts = {name: sequential_conv(module, name) for name in ("conv_x", "conv_h")}
    (conv_x, _), (conv_h, _) = parts["conv_x"], parts["conv_h"]
    k = odd_square_kernel(conv_x, "conv_x[0]")
    if odd_square_kernel(conv_h, "conv_h[0]") != k:
        raise Skip(f"conv_x and conv_h have different kernels {conv_x.kernel_size}, "
                   f"{conv_h.kernel_size}")
    cin = conv_x.in_channels
    expect_channels(conv_x, "conv_x[0]", cin, 4 * C)
    expect_channels(conv_h, "conv_h[0]", C, 4 * C)
    bias = same_bias({"conv_x[0]": conv_x, "conv_h[0]": conv_h})
    spatial = check_layer_norms(parts)
    # conv_o and conv_last are adopted as they are: the forward never calls them
    sequential_conv(module, "conv_o")
    if not isinstance(module.conv_last, nn.Module):
        raise Skip("conv_last is not a module")
    return OpenSTLConvLSTMCell.adopt(
        module, {n: getattr(module, n) for n in ("conv_x", "conv_h", "conv_o", "conv_last")},
        backend, memory_efficient, input_size=cin, hidden_size=C, kernel_size=k, bias=bias,
        layer_norm=spatial is not None, spatial_size=spatial, unused_convs=True)


def run_convlstm(module: nn.Module, gen: torch.Generator) -> list:
    norm = module.conv_x[1] if len(module.conv_x) == 2 else None
    b, h, w = (1, *norm.normalized_shape[1:]) if norm is not None else PROBE_SHAPE
    C = module.num_hidden
    x = randn(gen, b, module.conv_x[0].in_channels, h, w)
    return list(module(x, randn(gen, b, C, h, w), randn(gen, b, C, h, w)))


class PhyDConvLSTMCell(DropIn, ConvLSTMCell):
    """Drop-in for PhyDNet's PhyD_ConvLSTM_Cell (OpenSTL ``phydnet_modules.py``)."""

    family = "chengtan9907/OpenSTL PhyD_ConvLSTM_Cell"

    def forward(self, x, hidden):
        """x (B, Cin, H, W); hidden ``(h, c)`` each (B, C, H, W). Returns ``(h_next, c_next)``."""
        self.check_input(x, "x")
        return self._run(x, self.check_state(hidden, x))


def convert_phyd(module: nn.Module, backend: str, memory_efficient: bool = False):
    return convert_one_conv(PhyDConvLSTMCell, module, int(module.input_dim),
                            int(module.hidden_dim), backend, memory_efficient)


def run_phyd(module: nn.Module, gen: torch.Generator) -> list:
    b, h, w = PROBE_SHAPE
    x = randn(gen, b, module.input_dim, h, w)
    return list(module(x, (randn(gen, b, module.hidden_dim, h, w),
                           randn(gen, b, module.hidden_dim, h, w))))


CONVLSTM = Family("chengtan9907/OpenSTL ConvLSTMCell", "ConvLSTMCell",
                  ("num_hidden", "conv_x", "conv_h", "conv_o", "conv_last"), convert_convlstm,
                  run_convlstm, probe_small_norms=True)
PREDRNN_V2 = Family("chengtan9907/OpenSTL SpatioTemporalLSTMCellv2", "SpatioTemporalLSTMCellv2",
                    thuml.FAMILY.markers, thuml.convert, thuml.run, probe_small_norms=True)
PHYD_CONVLSTM = Family("chengtan9907/OpenSTL PhyD_ConvLSTM_Cell", "PhyD_ConvLSTM_Cell",
                       ("input_dim", "hidden_dim", "conv"), convert_phyd, run_phyd)
