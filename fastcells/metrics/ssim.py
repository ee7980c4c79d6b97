"""Structural similarity (Wang et al., 2004) with a Gaussian window.

Matches ``skimage.metrics.structural_similarity(im1, im2, data_range=data_range,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=0)`` per frame:
local statistics from a normalised Gaussian window (``win_size`` taps, standard deviation
``sigma``), K1 = 0.01, K2 = 0.03, population (not sample) covariances, and the mean of the
SSIM map over the pixels whose window lies inside the image (skimage filters the whole
image with reflected borders, then crops ``(win_size - 1) // 2`` pixels per side: the same
pixels), then over channels. skimage's Gaussian filter has radius ``int(3.5 * sigma + 0.5)``,
so the two agree when ``win_size == 2 * int(3.5 * sigma + 0.5) + 1`` (11 for sigma 1.5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_range, frames, reduce

K1, K2 = 0.01, 0.03


def gaussian_window(win_size: int, sigma: float, dtype=torch.float64, device=None) -> Tensor:
    """(win_size,) normalised 1-D Gaussian taps centred on the middle tap."""
    x = torch.arange(win_size, dtype=dtype, device=device) - (win_size - 1) / 2
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0, win_size: int = 11,
         sigma: float = 1.5, reduction: str = "mean") -> Tensor:
    """SSIM of each frame (the mean over its channels and valid pixels), averaged over batch
    and time.

    Args:
        pred, target: (B, T, C, H, W) or (B, C, H, W), H and W >= ``win_size``.
        data_range: the value range of the data (1.0 for [0, 1] frames).
        win_size: odd window size; sigma: the Gaussian's standard deviation.
        reduction: ``"mean"`` (0-dim) or ``"none"`` (per frame: (B, T), or (B,) for 4-D).

    Computed in float64 (variances are small differences of large moments).
    """
    data_range = check_range(data_range)
    pred, target, single = frames(pred, target, "ssim")
    if not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size: expected an odd positive int, got {win_size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive float, got {sigma!r}")
    b, t, c, h, w = pred.shape
    if h < win_size or w < win_size:
        raise ValueError(f"ssim: frames of {h}x{w} are smaller than win_size={win_size}")
    x = pred.reshape(b * t * c, 1, h, w).double()
    y = target.reshape(b * t * c, 1, h, w).double()
    g = gaussian_window(win_size, sigma, device=x.device)
    gh, gw = g.view(1, 1, win_size, 1), g.view(1, 1, 1, win_size)

    def blur(z):  # separable 'valid' filtering: only pixels whose window is inside the image
        return F.conv2d(F.conv2d(z, gh), gw)

    # the five local moments in one batch of convolutions
    stats = blur(torch.cat([x, y, x * x, y * y, x * y], dim=1).view(-1, 1, h, w))
    stats = stats.view(b * t * c, 5, h - win_size + 1, w - win_size + 1)
    mx, my, mxx, myy, mxy = stats.unbind(1)
    vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    per_frame = smap.reshape(b, t, -1).mean(-1)     # mean over channels and pixels
    return reduce(per_frame, single, reduction)
