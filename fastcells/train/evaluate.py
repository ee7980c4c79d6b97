"""Validation: autoregressive prediction of a dataset, metrics per predicted frame."""
from __future__ import annotations

import torch
from torch import nn

from .. import metrics

# name -> metric(pred, target) on (B, 1, C, H, W), averaged over the batch
METRICS = {
    "mse_per_frame": metrics.mse_per_frame,   # sum over (C, H, W): the PredRNN/OpenSTL tables
    "mae_per_frame": metrics.mae_per_frame,
    "mse_per_pixel": metrics.mse_per_pixel,
    "ssim": metrics.ssim,
    "psnr": metrics.psnr,
}


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset, input_len: int, pred_len: int, batch_size: int,
                   device, max_batches: int | None = None, progress: bool = False) -> dict:
    """Means over the dataset (``<name>``) and per predicted frame (``<name>_curve``) of
    :data:`METRICS`, for ``model`` reading ``input_len`` frames and predicting ``pred_len``.
    Sequences are taken in order, ``batch_size`` at a time (``max_batches`` caps them)."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    n = len(dataset)
    starts = list(range(0, n, batch_size))[:max_batches]
    sums = {name: torch.zeros(pred_len, dtype=torch.float64) for name in METRICS}
    count = 0
    for start in tqdm(starts, disable=not progress, desc="eval", leave=False):
        frames = torch.stack([dataset[i] for i in range(start, min(start + batch_size, n))])
        frames = frames.to(device)
        truth = frames[:, input_len:input_len + pred_len].float()
        pred = model(frames[:, :input_len], pred_len=pred_len).float()
        b = frames.shape[0]
        for name, fn in METRICS.items():
            for t in range(pred_len):
                sums[name][t] += float(fn(pred[:, t:t + 1], truth[:, t:t + 1])) * b
        count += b
    model.train(was_training)
    result = {}
    for name, total in sums.items():
        curve = (total / count).tolist()
        result[name] = sum(curve) / len(curve)
        result[f"{name}_curve"] = curve
    return result
