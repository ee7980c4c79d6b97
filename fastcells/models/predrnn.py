"""PredRNN and PredRNN-v2 (thuml/predrnn-pytorch ``predrnn.py``, ``predrnn_v2.py``).

A stack of ST-LSTM cells with the zigzag spatiotemporal memory: at each step ``m`` rises
through the layers and the bottom layer reads the top layer's ``m`` of the previous step.
Frames are optionally cut into ``patch_size`` x ``patch_size`` patches stacked on the
channels (thuml's ``reshape_patch``). PredRNN-v2 adds the memory decoupling loss and is
trained with reverse scheduled sampling (:mod:`fastcells.models.sampling`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._cells import cell_factory, embed_head
from .rollout import RecurrentForecaster


def reshape_patch(x: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, p*p*C, H/p, W/p), channel index ``(i*p + j)*C + c`` for the pixel
    (i, j) of the patch: the order of thuml's ``reshape_patch`` (channels-last there)."""
    if patch_size == 1:
        return x
    b, c, h, w = x.shape
    p = patch_size
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(b, p * p * c, h // p, w // p)


def reshape_patch_back(x: Tensor, patch_size: int) -> Tensor:
    """The inverse of :func:`reshape_patch`."""
    if patch_size == 1:
        return x
    b, pc, hp, wp = x.shape
    p = patch_size
    c = pc // (p * p)
    x = x.reshape(b, p, p, c, hp, wp).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, c, hp * p, wp * p)


def decoupling_term(delta_c: Tensor, delta_m: Tensor, adapter_weight: Tensor) -> Tensor:
    """PredRNN-v2's decoupling loss of one layer at one step.

    The shared 1x1 adapter maps both increments; per sample and channel, the absolute cosine
    similarity of the two maps over the spatial positions; the mean over samples and
    channels. delta_c, delta_m: (B, C, H, W); adapter_weight: (C, C, 1, 1).
    """
    a = F.conv2d(delta_c, adapter_weight).flatten(2)
    b = F.conv2d(delta_m, adapter_weight).flatten(2)
    # thuml normalizes before the cosine similarity; kept for identical epsilons
    cos = F.cosine_similarity(F.normalize(a, dim=2), F.normalize(b, dim=2), dim=2)
    return cos.abs().mean()


class PredRNN(RecurrentForecaster):
    """PredRNN (``decouple=False``) or PredRNN-v2 (``decouple=True``).

    Args:
        frame_channels: C of the frames.
        hidden_size: channels of every ST-LSTM layer (and of the memory m).
        num_layers: number of ST-LSTM layers.
        kernel_size: the cells' kernel.
        patch_size: thuml's patch reshaping; H and W must be divisible by it.
        embed: False (thuml): the first cell reads the (patched) frame and a 1x1 convolution
            without bias (``conv_last``) maps the top h back; True (the MS-LSTM authors'
            harness, used by the MS-LSTM presets): 1x1 embedding and head convolutions with
            bias, as for the other MS-LSTM baselines.
        bias, layer_norm: the cells' options (thuml's current code: neither); layer norm
            fixes the spatial size, so it needs ``frame_size``.
        decouple: PredRNN-v2: the cells also return Δc, Δm and ``forward_train`` reports
            ``losses["decouple"]``, the mean over steps and layers of
            :func:`decoupling_term` with the shared adapter ``adapter`` (1x1, no bias).
        decouple_beta: weight of the decoupling loss in ``training_loss`` (thuml: 0.1).
        frame_size, input_len, pred_len, backend, memory_efficient: as for all models.

    Shapes: ``forward`` (B, T_in, C, H, W) -> (B, pred_len, C, H, W).
    """

    def __init__(self, frame_channels: int, hidden_size: int = 64, num_layers: int = 4,
                 kernel_size: int = 5, patch_size: int = 1, embed: bool = False,
                 bias: bool = False, layer_norm: bool = False, decouple: bool = False,
                 decouple_beta: float = 0.1, frame_size=None, input_len: int = 10,
                 pred_len: int = 10, backend: str = "auto", memory_efficient: bool = False):
        super().__init__(frame_channels, frame_size, input_len, pred_len, backend)
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be an int >= 1, got {patch_size!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.patch_size, self.decouple = patch_size, bool(decouple)
        self.loss_weights = {"decouple": float(decouple_beta)}
        if self.frame_size is not None:
            self._check_spatial(*self.frame_size)
        spatial = None
        if layer_norm:
            if self.frame_size is None:
                raise ValueError("frame_size: layer_norm=True normalizes over (C, H, W), so "
                                 "frame_size=(H, W) is required")
            spatial = tuple(s // patch_size for s in self.frame_size)
        make = cell_factory("stlstm", backend, memory_efficient, kernel_size=kernel_size,
                            bias=bias, layer_norm=layer_norm, spatial_size=spatial)
        patched = frame_channels * patch_size ** 2
        if embed:
            self.embed, self.head = embed_head(patched, hidden_size)
            first = hidden_size
        else:
            self.embed = None
            self.head = nn.Conv2d(hidden_size, patched, 1, bias=False)  # thuml's conv_last
            first = patched
        self.cells = nn.ModuleList(make(first if i == 0 else hidden_size, hidden_size)
                                   for i in range(num_layers))
        self.adapter = nn.Conv2d(hidden_size, hidden_size, 1, bias=False) if decouple else None

    def _check_spatial(self, height: int, width: int) -> None:
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"frames: H and W must be divisible by patch_size={p}, got "
                             f"{height}x{width}")

    def init_state(self, x: Tensor):
        """Zero (h, c) per layer and zero m, for the patched (and embedded) input x."""
        b, _, h, w = x.shape
        z = x.new_zeros(b, self.cells[0].hidden_size, h, w)
        return [(z, z)] * len(self.cells), z

    def step(self, frame: Tensor, state, need_aux: bool = False):
        x = reshape_patch(frame, self.patch_size)
        if self.embed is not None:
            x = self.embed(x)
        layers, m = self.init_state(x) if state is None else state
        new, terms = [], []
        for cell, (h, c) in zip(self.cells, layers):
            if self.decouple and need_aux:
                (h, c, m), (dc, dm) = cell(x, (h, c, m), return_deltas=True)
                terms.append(decoupling_term(dc, dm, self.adapter.weight))
            else:
                h, c, m = cell(x, (h, c, m))
            new.append((h, c))
            x = h
        prediction = reshape_patch_back(self.head(x), self.patch_size)
        return prediction, (new, m), ({"decouple": torch.stack(terms)} if terms else None)

    def reduce_aux(self, aux: list) -> dict:
        if not self.decouple:
            return {}
        return {"decouple": torch.cat([a["decouple"] for a in aux]).mean()}
