"""LPIPS (Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric") with user-supplied weights: nothing is ever downloaded.

The architecture is that of the ``lpips`` package (richzhang/PerceptualSimilarity, v0.1):
inputs in [-1, 1] are shifted and scaled per RGB channel (``ScalingLayer``), passed through
a backbone (AlexNet or VGG16 ``features``, cut into 5 slices after ReLUs), each slice's
activations are normalised to unit length over channels, the squared differences between
the two images' features are weighted per channel by a learned 1x1 convolution (no bias),
averaged over space and summed over the 5 layers.

Expected weights (``torch.load``-able state dicts, keys as in the ``lpips`` package):

* ``weights_path``: either a full ``lpips.LPIPS(net=...).state_dict()`` (keys
  ``net.slice{1..5}.{i}.weight/bias`` for the backbone convolutions and
  ``lin{0..4}.model.1.weight`` (1, C_k, 1, 1) for the linear layers; ``scaling_layer.*``
  optional), or the linear layers alone, as shipped in the package's
  ``lpips/weights/v0.1/alex.pth`` / ``vgg.pth`` (``lin{k}.model.1.weight``; ``model.0``
  also accepted, the layout without dropout).
* ``backbone_path`` (needed when ``weights_path`` holds only the linear layers): the
  torchvision ImageNet checkpoint of the backbone (``alexnet-owt-7be5be79.pth``,
  ``vgg16-397923af.pth``: keys ``features.{i}.weight/bias``; ``classifier.*`` ignored).

AlexNet ``features`` indices: conv 0, 3, 6, 8, 10; VGG16: conv 0, 2, 5, 7, 10, 12, 14, 17,
19, 21, 24, 26, 28.
"""
from __future__ import annotations

import os
import re

import torch
from torch import Tensor, nn

from ._checks import check_range, frames, reduce

# (features index, layer) for each backbone; a conv is (in, out, kernel, stride, padding),
# "R" a ReLU, ("M", kernel, stride) a max-pool, as in torchvision's definitions
_ALEX = [(0, (3, 64, 11, 4, 2)), (1, "R"), (2, ("M", 3, 2)), (3, (64, 192, 5, 1, 2)),
         (4, "R"), (5, ("M", 3, 2)), (6, (192, 384, 3, 1, 1)), (7, "R"),
         (8, (384, 256, 3, 1, 1)), (9, "R"), (10, (256, 256, 3, 1, 1)), (11, "R")]
_ALEX_SLICES = [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)]   # [start, stop) per slice


def _vgg16_layers():
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    layers, c_in, i = [], 3, 0
    for v in cfg:
        if v == "M":
            layers.append((i, ("M", 2, 2)))
            i += 1
        else:
            layers += [(i, (c_in, v, 3, 1, 1)), (i + 1, "R")]
            c_in, i = v, i + 2
    return layers


_BACKBONES = {
    "alex": (_ALEX, _ALEX_SLICES, [64, 192, 384, 256, 256]),
    "vgg": (_vgg16_layers(), [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)],
            [64, 128, 256, 512, 512]),
}


class _Backbone(nn.Module):
    """The 5 feature slices (``slice1`` .. ``slice5``) with torchvision's layer indices."""

    def __init__(self, net: str):
        super().__init__()
        layers, slices, _ = _BACKBONES[net]
        by_index = dict(layers)
        for k, (start, stop) in enumerate(slices, 1):
            seq = nn.Sequential()
            for i in range(start, stop):
                spec = by_index[i]
                if spec == "R":
                    layer = nn.ReLU()
                elif spec[0] == "M":
                    layer = nn.MaxPool2d(spec[1], spec[2])
                else:
                    c_in, c_out, kernel, stride, pad = spec
                    layer = nn.Conv2d(c_in, c_out, kernel, stride, pad)
                seq.add_module(str(i), layer)
            setattr(self, f"slice{k}", seq)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            outs.append(x)
        return outs


class _ScalingLayer(nn.Module):
    """Per-channel shift and scale of the [-1, 1] input (the lpips package's constants)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([.458, .448, .450]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale


class _Linear(nn.Module):
    """``lin{k}``: a 1x1 convolution to one channel, no bias, at ``model.1`` (``model.0`` is
    the dropout of the ``lpips`` package, an identity at evaluation)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))


def _load(path, what):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LPIPS: {what} file {path!r} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"],
                                                                        dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"LPIPS: {what} file {path!r} should hold a state dict, "
                         f"got {type(state).__name__}")
    # checkpoints saved from DataParallel models prefix every key with "module."
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


class LPIPS(nn.Module):
    """LPIPS distance with weights from files (module docstring for the expected keys).

    Args:
        weights_path: the LPIPS state dict (full, or linear layers only). Required: there is
            no download; passing None raises a ValueError saying what to supply.
        net: ``"alex"`` (the default of the ``lpips`` package) or ``"vgg"``.
        backbone_path: torchvision checkpoint of the backbone, when ``weights_path`` has
            only the linear layers.

    ``forward(pred, target, data_range=1.0, reduction="mean")``: frames (B, T, C, H, W) or
    (B, C, H, W) with values in [0, data_range] (mapped to [-1, 1]); C = 3, or C = 1
    (repeated to RGB, as is usual for grayscale video). Returns the mean distance (0-dim)
    or per-frame distances (B, T) / (B,). Frames must be large enough for the backbone
    (AlexNet: at least 32x32 is safe; VGG: 16x16). The module is frozen and in eval mode.
    """

    def __init__(self, weights_path=None, net: str = "alex", backbone_path=None):
        super().__init__()
        if net not in _BACKBONES:
            raise ValueError(f"net: expected 'alex' or 'vgg', got {net!r}")
        if weights_path is None:
            raise ValueError("LPIPS needs weights and never downloads them: pass "
                             "weights_path= a state dict of lpips.LPIPS(net=...) (or the "
                             "package's weights/v0.1/<net>.pth plus backbone_path= the "
                             "torchvision backbone checkpoint)")
        self.net_name = net
        self.scaling_layer = _ScalingLayer()
        self.net = _Backbone(net)
        channels = _BACKBONES[net][2]
        for k, ch in enumerate(channels):
            setattr(self, f"lin{k}", _Linear(ch))
        self._load_weights(weights_path, backbone_path)
        self.requires_grad_(False)
        self.eval()

    def _load_weights(self, weights_path, backbone_path):
        state = _load(weights_path, "weights")
        wanted = {}
        for k, v in state.items():
            m = re.fullmatch(r"lin(\d)\.model\.[01]\.weight", k)
            if m:
                wanted[f"lin{m.group(1)}.model.1.weight"] = v
            elif k.startswith("net.slice"):
                wanted[k] = v
            elif k in ("scaling_layer.shift", "scaling_layer.scale"):
                wanted[k] = v.reshape(1, 3, 1, 1)
        if backbone_path is not None:
            slices = _BACKBONES[self.net_name][1]
            for k, v in _load(backbone_path, "backbone").items():
                m = re.fullmatch(r"features\.(\d+)\.(weight|bias)", k)
                if m:
                    i = int(m.group(1))
                    s = next((n for n, (a, b) in enumerate(slices, 1) if a <= i < b), None)
                    if s is not None:
                        wanted[f"net.slice{s}.{i}.{m.group(2)}"] = v
        own = self.state_dict()
        missing = sorted(k for k in own if k not in wanted and not k.startswith("scaling_layer."))
        if missing:
            hint = ("" if any(k.startswith("net.") for k in wanted) else
                    "; the backbone is missing: pass backbone_path= the torchvision checkpoint")
            raise ValueError(f"LPIPS({self.net_name!r}): weights lack {len(missing)} "
                             f"parameter(s), e.g. {missing[:3]}{hint}")
        for k, v in wanted.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise ValueError(f"LPIPS({self.net_name!r}): {k} has shape {tuple(v.shape)}, "
                                 f"expected {tuple(own[k].shape)} (wrong net=?)")
        self.load_state_dict(wanted, strict=False)

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """LPIPS between images (N, 3, H, W) in [-1, 1]; returns (N,)."""
        fx, fy = self.net(self.scaling_layer(x)), self.net(self.scaling_layer(y))
        total = 0
        for k, (a, b) in enumerate(zip(fx, fy)):
            # unit-normalise over channels (eps as in the lpips package)
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{k}").model((a - b) ** 2).mean((1, 2, 3))
        return total

    def forward(self, pred: Tensor, target: Tensor, data_range: float = 1.0,
                reduction: str = "mean") -> Tensor:
        data_range = check_range(data_range)
        pred, target, single = frames(pred, target, "LPIPS")
        b, t, c, h, w = pred.shape
        if c not in (1, 3):
            raise ValueError(f"LPIPS: frames need 1 or 3 channels, got {c} "
                             f"(shape {tuple(pred.shape)})")
        dtype = self.scaling_layer.shift.dtype
        x = pred.reshape(b * t, c, h, w).to(dtype) * (2.0 / data_range) - 1.0
        y = target.reshape(b * t, c, h, w).to(dtype) * (2.0 / data_range) - 1.0
        if c == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        try:
            d = self.distance(x, y)
        except RuntimeError as e:
            if "size" not in str(e).lower():
                raise
            raise ValueError(f"LPIPS({self.net_name!r}): frames of {h}x{w} are too small for "
                             f"the backbone ({e})") from None
        return reduce(d.view(b, t), single, reduction)
