"""Pixel-error metrics: MSE and MAE in two conventions, and PSNR.

Two MSE/MAE conventions are in use and their values differ by the number of elements per
frame (C*H*W = 4096 on 64x64 Moving MNIST):

* ``mse_per_frame`` / ``mae_per_frame``: the error summed over each frame's (C, H, W),
  then averaged over batch and time: the convention of the PredRNN and OpenSTL tables
  (Moving MNIST MSE in the tens, e.g. PredRNN ~ 56).
* ``mse_per_pixel`` / ``mae_per_pixel``: the plain mean over every element.

All take ``pred`` and ``target`` of shape (B, T, C, H, W) (or (B, C, H, W)), same shape,
floating point, and return a 0-dim tensor (``reduction="mean"``) or the per-frame values
(B, T) ((B,) for 4-D input) with ``reduction="none"``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._checks import accumulate_dtype, check_range, frames, reduce


def _per_frame_error(pred, target, name, power, reduction, mean):
    pred, target, single = frames(pred, target, name)
    diff = (pred.to(accumulate_dtype(pred)) - target.to(accumulate_dtype(pred))).abs()
    if power == 2:
        diff = diff * diff
    per_frame = diff.flatten(2).mean(-1) if mean else diff.flatten(2).sum(-1)   # (B, T)
    return reduce(per_frame, single, reduction)


def mse_per_frame(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Squared error summed over each frame's (C, H, W), averaged over batch and time
    (PredRNN/OpenSTL convention)."""
    return _per_frame_error(pred, target, "mse_per_frame", 2, reduction, mean=False)


def mae_per_frame(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Absolute error summed over each frame's (C, H, W), averaged over batch and time
    (PredRNN/OpenSTL convention)."""
    return _per_frame_error(pred, target, "mae_per_frame", 1, reduction, mean=False)


def mse_per_pixel(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error over all elements (with ``reduction="none"``: per frame)."""
    return _per_frame_error(pred, target, "mse_per_pixel", 2, reduction, mean=True)


def mae_per_pixel(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error over all elements (with ``reduction="none"``: per frame)."""
    return _per_frame_error(pred, target, "mae_per_pixel", 1, reduction, mean=True)


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0,
         reduction: str = "mean") -> Tensor:
    """Peak signal-to-noise ratio in dB, computed per frame,
    ``10 log10(data_range^2 / mean((pred - target)^2 over C, H, W))``, then averaged over
    batch and time (the mean of per-frame PSNRs, not the PSNR of the mean MSE). A frame
    with zero error has PSNR +inf (as in ``skimage.metrics.peak_signal_noise_ratio``), and
    so does the mean."""
    data_range = check_range(data_range)
    pred, target, single = frames(pred, target, "psnr")
    mse = mse_per_pixel(pred, target, reduction="none")             # (B, T)
    return reduce(10.0 * torch.log10(data_range ** 2 / mse), single, reduction)   # 0 -> inf


__all__ = ["mae_per_frame", "mae_per_pixel", "mse_per_frame", "mse_per_pixel", "psnr"]
