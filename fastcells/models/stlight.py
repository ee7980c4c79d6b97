"""STLight (seed 003): a recurrent-free, fully convolutional predictor, written from the
paper's description and its listing (supplementary Section G, Fig. 3).

- Patch encoder: the T_in input frames stacked on the channels (T_in*C), one convolution
  to ``dim`` channels with kernel ``p * max(1, O)``, stride ``p`` (patch size) and padding
  ``max(0, O - 1) * p // 2`` (O: overlapping), then BatchNorm and GELU.
- ``depth`` STLMixer blocks: a residual depthwise block (depthwise conv ``k1``, depthwise
  conv ``k2`` with dilation 3, GELU, BatchNorm) followed by a pointwise block (1x1 conv,
  GELU, BatchNorm). The block input at ``depth // 3`` is added to the input of block
  ``2 * depth // 3`` (the listing's ``x1`` skip).
- Decoder "Shuffle-Reassemble" (Section F): pixel shuffle by ``p`` to ``dim / p^2``
  channels at full resolution, then a 1x1 convolution to the T_out*C output channels. (The
  listing's ``dim // patch_size * 2`` input channels is a typo for ``dim // patch_size**2``:
  pixel shuffle leaves ``dim / p^2`` channels, as the text says.)
- "Hybrid" initialization (Section D): Kaiming-normal (fan_out, relu) for the encoder and
  mixer convolutions, biases 0; PyTorch's default for the reassemble convolution.

STLight has no recurrent cell, so no fastcells kernel applies: ``backend`` is accepted for
the zoo's uniform interface and ``.backend`` reports ``"reference"``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .rollout import Forecaster, TrainOutput


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x


def stl_mixer(dim: int, k1: int, k2: int, dilation: int) -> nn.Sequential:
    """One STLMixer block (dim -> dim, same spatial size)."""
    return nn.Sequential(
        _Residual(nn.Sequential(
            nn.Conv2d(dim, dim, k1, groups=dim, padding="same"),
            nn.Conv2d(dim, dim, k2, groups=dim, padding="same", dilation=dilation),
            nn.GELU(), nn.BatchNorm2d(dim))),
        nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU(), nn.BatchNorm2d(dim)),
    )


class STLight(Forecaster):
    """STLight: ``input_len`` frames in, ``pred_len`` frames out, in one pass.

    Args:
        frame_channels: C of the frames.
        dim: channels of the mixer (STLight-L: 1400); divisible by ``patch_size ** 2``.
        depth: number of STLMixer blocks (STLight-L: 16).
        kernel_sizes: (k1, k2) of the two depthwise convolutions (STLight-L: 3, 7).
        patch_size: p, the encoder stride (STLight-L: 2); H and W must be divisible by it.
        overlapping: O, encoder kernel ``p * max(1, O)`` (STLight-L: 1, no overlap).
        dilation: of the second depthwise convolution (the listing: 3).
        frame_size, input_len, pred_len: the model reads exactly ``input_len`` frames and
            emits ``pred_len`` frames per pass.
        backend: accepted for the uniform interface (no recurrent cell here).

    ``forward(frames, pred_len=N)``: frames (B, input_len, C, H, W) -> (B, N, C, H, W).
    For N > ``self.pred_len`` the model runs again on the latest ``input_len`` frames
    (given and predicted) until N frames exist, as a recurrent-free model rolls out.
    ``forward_train(frames)``: frames (B, T >= input_len + pred_len, C, H, W); predicts
    ``frames[:, input_len:input_len + pred_len]`` from the first ``input_len`` frames;
    sampling masks do not apply (``mask`` must be None).
    """

    def __init__(self, frame_channels: int, dim: int = 1400, depth: int = 16,
                 kernel_sizes=(3, 7), patch_size: int = 2, overlapping: int = 1,
                 dilation: int = 3, frame_size=None, input_len: int = 10, pred_len: int = 10,
                 backend: str = "auto"):
        super().__init__(frame_channels, frame_size, input_len, pred_len, backend)
        if dim < 1 or depth < 1 or patch_size < 1 or overlapping < 0 or dim % patch_size ** 2:
            raise ValueError(f"need dim, depth, patch_size >= 1, overlapping >= 0 and dim "
                             f"divisible by patch_size**2; got dim={dim}, depth={depth}, "
                             f"patch_size={patch_size}, overlapping={overlapping}")
        k1, k2 = kernel_sizes
        p = patch_size
        self.patch_size = p
        self.encoder = nn.Sequential(
            nn.Conv2d(input_len * frame_channels, dim, kernel_size=p * max(1, overlapping),
                      stride=p, padding=max(0, overlapping - 1) * p // 2),
            nn.BatchNorm2d(dim), nn.GELU())
        self.mixers = nn.ModuleList(stl_mixer(dim, k1, k2, dilation) for _ in range(depth))
        self.shuffle = nn.PixelShuffle(p)
        self.reassemble = nn.Conv2d(dim // p ** 2, pred_len * frame_channels, 1)
        for module in (self.encoder, self.mixers):
            module.apply(_init_hybrid)
        if self.frame_size is not None:
            self._check_spatial(*self.frame_size)

    def _check_spatial(self, height: int, width: int) -> None:
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"frames: H and W must be divisible by patch_size={p}, got "
                             f"{height}x{width}")

    def _check_input_len(self, frames: Tensor, at_least: int) -> None:
        if frames.shape[1] < at_least or (at_least == self.input_len
                                          and frames.shape[1] != self.input_len):
            want = (f"= input_len = {self.input_len}" if at_least == self.input_len
                    else f">= input_len + pred_len = {at_least}")
            raise ValueError(f"frames: STLight reads a fixed number of frames, T must be "
                             f"{want}, got shape {tuple(frames.shape)}")

    def predict_once(self, frames: Tensor) -> Tensor:
        """(B, input_len, C, H, W) -> (B, pred_len, C, H, W), one pass."""
        b, t, c, h, w = frames.shape
        z = self.encoder(frames.reshape(b, t * c, h, w))
        n = len(self.mixers)
        first, second = n // 3, 2 * n // 3
        for i, block in enumerate(self.mixers):
            if i == first:
                skip = z
            if i == second and second > first:  # depth 1 has no distinct skip span
                z = z + skip
            z = block(z)
        y = self.reassemble(self.shuffle(z))
        return y.reshape(b, self.pred_len, c, h, w)

    def forward(self, frames: Tensor, pred_len: int | None = None) -> Tensor:
        self.check_frames(frames)
        self._check_input_len(frames, self.input_len)
        n = self._pred_len(pred_len)
        window, outputs, have = frames, [], 0
        while have < n:
            y = self.predict_once(window)
            outputs.append(y)
            have += y.shape[1]
            window = torch.cat([window, y], dim=1)[:, -self.input_len:]
        return torch.cat(outputs, dim=1)[:, :n]

    def forward_train(self, frames: Tensor, mask: Tensor | None = None) -> TrainOutput:
        if mask is not None:
            raise ValueError("mask: STLight is not recurrent and has no sampling schedule; "
                             "mask must be None")
        self.check_frames(frames)
        self._check_input_len(frames, self.input_len + self.pred_len)
        predictions = self.predict_once(frames[:, :self.input_len])
        targets = frames[:, self.input_len:self.input_len + self.pred_len]
        return TrainOutput(predictions, targets, {})


def _init_hybrid(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
