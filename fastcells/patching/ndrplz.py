"""ndrplz/ConvLSTM_pytorch ``ConvLSTMCell(input_dim, hidden_dim, kernel_size, bias)``:
``forward(input_tensor, cur_state) -> (h_next, c_next)``, ``init_hidden(batch, (H, W))``."""
from __future__ import annotations

import torch
from torch import nn

from ..cells import ConvLSTMCell
from .dropin import PROBE_SHAPE, DropIn, Family, expect_channels, odd_square_kernel, randn


class NdrplzConvLSTMCell(DropIn, ConvLSTMCell):
    """Drop-in for ndrplz's ConvLSTMCell: same attributes, forward signature and returns."""

    family = "ndrplz/ConvLSTM_pytorch ConvLSTMCell"

    def forward(self, input_tensor, cur_state):
        """input_tensor (B, Cin, H, W); cur_state ``(h, c)`` each (B, C, H, W).
        Returns ``(h_next, c_next)``."""
        self.check_input(input_tensor, "input_tensor")
        return self._run(input_tensor, self.check_state(cur_state, input_tensor))

    def init_hidden(self, batch_size: int, image_size):
        height, width = image_size
        w = self.conv.weight
        return tuple(torch.zeros(batch_size, self.hidden_dim, height, width, device=w.device,
                                 dtype=w.dtype) for _ in range(2))


def convert_one_conv(drop_in: type, module: nn.Module, cin: int, hidden: int, backend: str,
                     memory_efficient: bool):
    """A ConvLSTM cell whose gates come from one ``conv`` over ``[x; h]`` (ndrplz, NVlabs)."""
    conv = module.conv
    k = odd_square_kernel(conv, "conv")
    expect_channels(conv, "conv", cin + hidden, 4 * hidden)
    return drop_in.adopt(module, {"conv": conv}, backend, memory_efficient, input_size=cin,
                         hidden_size=hidden, kernel_size=k, bias=conv.bias is not None)


def convert(module: nn.Module, backend: str, memory_efficient: bool = False):
    return convert_one_conv(NdrplzConvLSTMCell, module, int(module.input_dim),
                            int(module.hidden_dim), backend, memory_efficient)


def run(module: nn.Module, gen: torch.Generator) -> list:
    b, h, w = PROBE_SHAPE
    x = randn(gen, b, module.input_dim, h, w)
    state = (randn(gen, b, module.hidden_dim, h, w), randn(gen, b, module.hidden_dim, h, w))
    return list(module(x, state))


FAMILY = Family("ndrplz/ConvLSTM_pytorch ConvLSTMCell", "ConvLSTMCell",
                ("input_dim", "hidden_dim", "conv"), convert, run)
