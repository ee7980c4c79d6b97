"""Validation: autoregressive prediction of a dataset, metrics per predicted frame."""
from __future__ import annotations

import torch
from torch import nn

from ..metrics import MetricTracker


def reset_sampling(model: nn.Module) -> None:
    """Restarts the noise of a model whose forward samples (VDT's ``reset_sampling``), so
    the predictions that follow are the same every time; nothing for the other models."""
    reset = getattr(model, "reset_sampling", None)
    if callable(reset):
        reset()


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset, input_len: int, pred_len: int, batch_size: int,
                   device, max_batches: int | None = None, progress: bool = False,
                   thresholds=(), lpips=None, fvd=None, fvd_videos: str = "full") -> dict:
    """Every metric of :class:`fastcells.metrics.MetricTracker` (MSE/MAE per frame and per
    pixel, PSNR, SSIM; CSI/HSS/POD/FAR at ``thresholds``; LPIPS when an
    :class:`fastcells.metrics.LPIPS` module is given) over the dataset (``<name>``) and
    per predicted frame (``<name>_curve``), for ``model`` reading ``input_len`` frames and
    predicting ``pred_len``; predictions are clipped to the data range [0, 1] first, as
    thuml's test loop does. Sequences are taken in order, ``batch_size`` at a time
    (``max_batches`` caps them). A sampling model (VDT) has its noise reset first
    (:func:`reset_sampling`): each batch gets its own noise, and the evaluation is the
    same every time it runs.

    With an :class:`fastcells.metrics.FVD` as ``fvd`` (reset here first), ``"fvd"`` is the
    Fréchet video distance between the real sequences and the predicted ones over every
    sequence evaluated: ``fvd_videos="full"`` compares whole clips, the given frames followed
    by the predicted ones against the true clip (the given frames are part of each video,
    as in seed 002's VDT evaluation and MCVD's Cityscapes protocol); ``"pred"`` compares the
    predicted frames with the true future frames only."""
    if fvd_videos not in ("full", "pred"):
        raise ValueError(f"fvd_videos: expected 'full' or 'pred', got {fvd_videos!r}")
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    reset_sampling(model)
    n = len(dataset)
    starts = list(range(0, n, batch_size))[:max_batches]
    tracker = MetricTracker(thresholds=thresholds, lpips=lpips)
    if fvd is not None:
        fvd.reset()
    for start in tqdm(starts, disable=not progress, desc="eval", leave=False):
        frames = torch.stack([dataset[i] for i in range(start, min(start + batch_size, n))])
        frames = frames.to(device)
        pred = model(frames[:, :input_len], pred_len=pred_len).float()
        pred = pred.clamp(0, 1)
        future = frames[:, input_len:input_len + pred_len].float()
        tracker.update(pred, future)
        if fvd is not None:
            if fvd_videos == "full":
                given = frames[:, :input_len].float()
                fvd.update(torch.cat([given, future], 1), torch.cat([given, pred], 1))
            else:
                fvd.update(future, pred)
    model.train(was_training)
    result = dict(tracker.compute())
    result.update({f"{k}_curve": v for k, v in tracker.curves().items()})
    if fvd is not None:
        result["fvd"] = fvd.compute()
    return result
