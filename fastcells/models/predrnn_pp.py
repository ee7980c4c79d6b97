"""PredRNN++ (Wang et al. 2018; OpenSTL ``openstl/models/predrnnpp_model.py``).

A stack of causal LSTM cells with PredRNN's zigzag spatiotemporal memory (``m`` rises
through the layers at each step; the bottom layer reads the top layer's ``m`` of the
previous step) and a gradient highway unit between the first and the second layer: the
second layer reads the GHU's ``z`` instead of the first layer's ``h``. Frames are optionally
cut into patches (:func:`fastcells.models.reshape_patch`, thuml's and OpenSTL's order).
Training with (reverse) scheduled sampling is the shared rollout's (:mod:`.rollout`).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..cells import GradientHighwayUnit
from ._cells import cell_factory, embed_head
from .predrnn import reshape_patch, reshape_patch_back
from .rollout import RecurrentForecaster

GHU_INIT = 0.001  # OpenSTL's GHU initializer: conv weights uniform in +-0.001


class PredRNNpp(RecurrentForecaster):
    """PredRNN++: causal LSTM stack, gradient highway unit, zigzag memory.

    Args:
        frame_channels: C of the frames.
        hidden_size: channels of every layer (and of m and the GHU's z).
        num_layers: causal LSTM layers, at least 2 (the GHU sits between layers 1 and 2).
        kernel_size: the cells' and the GHU's kernel.
        patch_size: patch reshaping; H and W must be divisible by it.
        embed: False (OpenSTL): the first cell reads the (patched) frame and a 1x1
            convolution without bias (``head``, OpenSTL's ``conv_last``) maps the top h
            back; True: 1x1 embedding and head convolutions with bias (the MS-LSTM
            authors' harness, as the zoo's other ``"mmnist"`` presets).
        bias, layer_norm: the cells' and the GHU's options (OpenSTL: neither); layer norm
            fixes the spatial size, so it needs ``frame_size``.
        unused_conv_o: build the causal cells' never-called ``conv_o`` (OpenSTL's
            checkpoints and parameter counts include it).
        frame_size, input_len, pred_len, backend, memory_efficient: as for all models.

    The GHU's weights start uniform in +-0.001, as OpenSTL initializes them.
    Shapes: ``forward`` (B, T_in, C, H, W) -> (B, pred_len, C, H, W).
    """

    def __init__(self, frame_channels: int, hidden_size: int = 64, num_layers: int = 4,
                 kernel_size: int = 5, patch_size: int = 1, embed: bool = False,
                 bias: bool = False, layer_norm: bool = False, unused_conv_o: bool = False,
                 frame_size=None, input_len: int = 10, pred_len: int = 10,
                 backend: str = "auto", memory_efficient: bool = False):
        super().__init__(frame_channels, frame_size, input_len, pred_len, backend)
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be an int >= 1, got {patch_size!r}")
        if num_layers < 2:
            raise ValueError(f"num_layers must be >= 2 (the gradient highway unit sits between "
                             f"layers 1 and 2), got {num_layers}")
        self.patch_size = patch_size
        if self.frame_size is not None:
            self._check_spatial(*self.frame_size)
        spatial = None
        if layer_norm:
            if self.frame_size is None:
                raise ValueError("frame_size: layer_norm=True normalizes over (C, H, W), so "
                                 "frame_size=(H, W) is required")
            spatial = tuple(s // patch_size for s in self.frame_size)
        make = cell_factory("causal_lstm", backend, memory_efficient, kernel_size=kernel_size,
                            bias=bias, layer_norm=layer_norm, spatial_size=spatial,
                            unused_conv_o=unused_conv_o)
        patched = frame_channels * patch_size ** 2
        if embed:
            self.embed, self.head = embed_head(patched, hidden_size)
            first = hidden_size
        else:
            self.embed = None
            self.head = nn.Conv2d(hidden_size, patched, 1, bias=False)  # OpenSTL's conv_last
            first = patched
        self.cells = nn.ModuleList(make(first if i == 0 else hidden_size, hidden_size)
                                   for i in range(num_layers))
        self.gradient_highway = GradientHighwayUnit(
            hidden_size, hidden_size, kernel_size, bias=bias, layer_norm=layer_norm,
            spatial_size=spatial, backend=backend, memory_efficient=memory_efficient)
        for block in (self.gradient_highway.z_concat, self.gradient_highway.x_concat):
            nn.init.uniform_(block[0].weight, -GHU_INIT, GHU_INIT)

    def _check_spatial(self, height: int, width: int) -> None:
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"frames: H and W must be divisible by patch_size={p}, got "
                             f"{height}x{width}")

    def init_state(self, x: Tensor):
        """Zero (h, c) per layer, zero m and no z (the GHU starts from zeros), for the patched
        (and embedded) input x."""
        b, _, h, w = x.shape
        zero = x.new_zeros(b, self.cells[0].hidden_size, h, w)
        return [(zero, zero)] * len(self.cells), zero, None

    def step(self, frame: Tensor, state, need_aux: bool = False):
        x = reshape_patch(frame, self.patch_size)
        if self.embed is not None:
            x = self.embed(x)
        layers, m, z = self.init_state(x) if state is None else state
        new = []
        for i, (cell, (h, c)) in enumerate(zip(self.cells, layers)):
            h, c, m = cell(x, (h, c, m))
            new.append((h, c))
            if i == 0:
                z = self.gradient_highway(h, z)
                x = z  # layer 2 reads the highway, not h
            else:
                x = h
        prediction = reshape_patch_back(self.head(x), self.patch_size)
        return prediction, (new, m, z), None
