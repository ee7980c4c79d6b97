"""Per-frame curves and a tracker that accumulates metrics over an evaluation set."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import check_range, frames
from .pixel import mae_per_frame, mae_per_pixel, mse_per_frame, mse_per_pixel, psnr
from .skill import contingency, scores
from .ssim import ssim

# name -> fn(pred, target, data_range) -> per-frame values (B, T)
FRAME_METRICS: dict[str, Callable] = {
    "mse_per_frame": lambda p, t, r: mse_per_frame(p, t, reduction="none"),
    "mae_per_frame": lambda p, t, r: mae_per_frame(p, t, reduction="none"),
    "mse_per_pixel": lambda p, t, r: mse_per_pixel(p, t, reduction="none"),
    "mae_per_pixel": lambda p, t, r: mae_per_pixel(p, t, reduction="none"),
    "psnr": lambda p, t, r: psnr(p, t, data_range=r, reduction="none"),
    "ssim": lambda p, t, r: ssim(p, t, data_range=r, reduction="none"),
}
DEFAULT_METRICS = tuple(FRAME_METRICS)


def per_frame(metric_fn: Callable, pred: Tensor, target: Tensor, **kwargs) -> Tensor:
    """The curve of ``metric_fn`` over time: a (T,) tensor whose entry t is
    ``metric_fn(pred[:, t], target[:, t], **kwargs)`` (e.g. the batch-mean MSE of frame t).

    ``pred``, ``target``: (B, T, C, H, W). ``metric_fn`` must return a scalar per call
    (any metric of this package with its default reduction, or one threshold of ``csi``).
    """
    pred, target, single = frames(pred, target, "per_frame")
    if single:
        raise ValueError(f"per_frame: expected sequences (B, T, C, H, W), got frames "
                         f"{tuple(pred.shape[:1] + pred.shape[2:])}")
    values = [torch.as_tensor(metric_fn(pred[:, t], target[:, t], **kwargs))
              for t in range(pred.shape[1])]
    if any(v.dim() != 0 for v in values):
        raise ValueError("per_frame: metric_fn should return one number per frame")
    return torch.stack(values)


def _key(name: str, thr: float) -> str:
    return f"{name}@{thr:g}"


class MetricTracker:
    """Accumulates metrics over batches of sequences; the results equal the whole-set
    computation (the mean over every (sequence, frame) of the per-frame values, and skill
    scores from the summed contingency table).

    Args:
        metrics: names from ``FRAME_METRICS`` (default: all: ``mse_per_frame``,
            ``mae_per_frame``, ``mse_per_pixel``, ``mae_per_pixel``, ``psnr``, ``ssim``).
        data_range: for PSNR, SSIM and LPIPS.
        thresholds: nowcasting thresholds (data units) for CSI/HSS/POD/FAR; none by default.
        lpips: an optional :class:`~fastcells.metrics.LPIPS` module (adds ``"lpips"``).

    ``update(pred, target)`` with (B, T, C, H, W) tensors; ``compute()`` -> flat
    ``{name: float}`` of means (skill scores as ``"csi@0.5"``...); ``curves()`` ->
    ``{name: [T floats]}``, the per-frame means. ``all_reduce()`` sums the accumulators
    over a ``torch.distributed`` group (call it before ``compute`` in DDP evaluation).
    """

    def __init__(self, metrics=DEFAULT_METRICS, data_range: float = 1.0, thresholds=(),
                 lpips=None):
        unknown = [m for m in metrics if m not in FRAME_METRICS]
        if unknown:
            raise ValueError(f"metrics: unknown {unknown}; expected names from "
                             f"{sorted(FRAME_METRICS)}")
        self.metrics = tuple(metrics)
        self.data_range = check_range(data_range)
        self.thresholds = [float(t) for t in thresholds]
        self.lpips = lpips
        self.reset()

    def reset(self) -> None:
        self.count = 0                   # sequences seen
        self.sums: dict[str, Tensor] = {}   # name -> (T,) float64 sums over sequences
        self.table: Tensor | None = None    # (T, K, 4) contingency counts

    def _names(self):
        return self.metrics + (("lpips",) if self.lpips is not None else ())

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Adds a batch: ``pred``, ``target`` (B, T, C, H, W) with the same T every time."""
        pred, target, single = frames(pred, target, "MetricTracker.update")
        if single:
            raise ValueError(f"MetricTracker.update: expected sequences (B, T, C, H, W), got "
                             f"{tuple(pred.shape[:1] + pred.shape[2:])}")
        t = pred.shape[1]
        if self.sums and next(iter(self.sums.values())).shape[0] != t:
            raise ValueError(f"MetricTracker.update: sequences of {t} frames after "
                             f"{next(iter(self.sums.values())).shape[0]}-frame ones")
        for name in self._names():
            if name == "lpips":
                values = self.lpips(pred, target, data_range=self.data_range,
                                    reduction="none")
            else:
                values = FRAME_METRICS[name](pred, target, self.data_range)
            total = values.double().sum(0).cpu()
            self.sums[name] = self.sums[name] + total if name in self.sums else total
        if self.thresholds:
            table = contingency(pred, target, self.thresholds, per_frame=True).cpu()
            self.table = table if self.table is None else self.table + table
        self.count += pred.shape[0]

    def all_reduce(self, group=None) -> None:
        """Sums the accumulators across the processes of ``group`` (torch.distributed)."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return
        device = "cuda" if dist.get_backend(group) == "nccl" else "cpu"
        parts = [torch.tensor([float(self.count)], dtype=torch.float64)]
        parts += [self.sums[n] for n in self._names() if n in self.sums]
        if self.table is not None:
            parts.append(self.table.double().flatten())
        flat = torch.cat(parts).to(device)
        dist.all_reduce(flat, group=group)
        flat = flat.cpu()
        self.count, i = round(flat[0].item()), 1
        for n in self._names():
            if n in self.sums:
                size = self.sums[n].numel()
                self.sums[n], i = flat[i:i + size].clone(), i + size
        if self.table is not None:
            self.table = flat[i:].round().to(torch.int64).view_as(self.table)

    def compute(self) -> dict[str, float]:
        """Means over every (sequence, frame) seen, and skill scores per threshold."""
        if self.count == 0:
            raise ValueError("MetricTracker.compute: no batch was added (call update first)")
        out = {n: float(s.sum() / (self.count * s.numel())) for n, s in self.sums.items()}
        if self.table is not None:
            for name, vals in scores(self.table.sum(0)).items():
                for thr, v in zip(self.thresholds, vals.tolist()):
                    out[_key(name, thr)] = v
        return out

    def curves(self) -> dict[str, list[float]]:
        """Per-frame means (T values per metric; skill scores from each frame's table)."""
        if self.count == 0:
            raise ValueError("MetricTracker.curves: no batch was added (call update first)")
        out = {n: (s / self.count).tolist() for n, s in self.sums.items()}
        if self.table is not None:
            for name, vals in scores(self.table).items():            # (T, K)
                for k, thr in enumerate(self.thresholds):
                    out[_key(name, thr)] = vals[:, k].tolist()
        return out


__all__ = ["DEFAULT_METRICS", "FRAME_METRICS", "MetricTracker", "per_frame"]
