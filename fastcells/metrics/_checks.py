"""Argument checks shared by the metrics."""
from __future__ import annotations

import torch
from torch import Tensor

REDUCTIONS = ("mean", "none")


def frames(pred, target, name: str = "metric") -> tuple[Tensor, Tensor, bool]:
    """Checks a prediction/target pair and returns both as (B, T, C, H, W) plus whether the
    input was a single-frame batch (B, C, H, W) (then T = 1)."""
    for arg, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: {arg} should be a Tensor (B, T, C, H, W) or (B, C, H, W), "
                            f"got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: {arg} should be a floating-point tensor, got {x.dtype}")
        if x.dim() not in (4, 5):
            raise ValueError(f"{name}: {arg} should have shape (B, T, C, H, W) or "
                             f"(B, C, H, W), got {tuple(x.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                         f"should have the same shape")
    single = pred.dim() == 4
    if single:
        pred, target = pred.unsqueeze(1), target.unsqueeze(1)
    return pred, target, single


def reduce(values: Tensor, single: bool, reduction: str) -> Tensor:
    """``values``: (B, T) per-frame values -> their mean, or (B, T) ((B,) for 4-D input)."""
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values[:, 0] if single else values
    raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")


def check_range(data_range) -> float:
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or \
            not data_range > 0:
        raise ValueError(f"data_range: expected a positive number, got {data_range!r}")
    return float(data_range)


def accumulate_dtype(x: Tensor) -> torch.dtype:
    # half-precision predictions (autocast) would lose digits in sums over 4096 pixels
    return torch.float64 if x.dtype == torch.float64 else torch.float32
