"""Categorical skill scores for nowcasting at intensity thresholds.

For a threshold ``thr``, a pixel is an event in the prediction when ``pred >= thr`` and
observed when ``target >= thr``; counting over pixels gives the contingency table

=================  ==================  ====================
                   observed            not observed
=================  ==================  ====================
predicted          hits (H)            false alarms (F)
not predicted      misses (M)          correct negatives (N)
=================  ==================  ====================

and the scores

* CSI (critical success index, threat score) = H / (H + M + F)
* POD (probability of detection) = H / (H + M)
* FAR (false alarm ratio) = F / (H + F)
* HSS (Heidke skill score) = 2 (H N - M F) / ((H + M)(M + N) + (H + F)(F + N))

The scores of a data set come from the table summed over all its pixels and frames (not the
mean of per-image scores), as in the nowcasting literature. **0/0 is NaN**: a score whose
denominator is zero is undefined (e.g. CSI and POD when nothing reaches the threshold, FAR
when nothing is predicted) and is returned as NaN, never as 0 or 1; ``nanmean`` skips them.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._checks import frames

FIELDS = ("hits", "misses", "false_alarms", "correct_negatives")


def _thresholds(thresholds) -> tuple[Tensor, bool]:
    scalar = isinstance(thresholds, (int, float)) and not isinstance(thresholds, bool)
    values = [thresholds] if scalar else thresholds
    if not isinstance(values, Sequence) or not values or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"thresholds: expected a number or a non-empty sequence of numbers, "
                         f"got {thresholds!r}")
    return torch.tensor([float(v) for v in values], dtype=torch.float64), scalar


def contingency(pred: Tensor, target: Tensor, thresholds, per_frame: bool = False) -> Tensor:
    """Contingency counts of ``pred >= thr`` vs ``target >= thr``.

    Args:
        pred, target: (B, T, C, H, W) or (B, C, H, W).
        thresholds: a number or a sequence of K numbers, in the data's units.
        per_frame: sum over batch and pixels only, keeping time.
    Returns:
        int64 tensor (K, 4) ((T, K, 4) with ``per_frame``; (4,) / (T, 4) for a scalar
        threshold) of [hits, misses, false alarms, correct negatives] (``FIELDS``).
    """
    pred, target, _ = frames(pred, target, "contingency")
    thr, scalar = _thresholds(thresholds)
    b, t = pred.shape[:2]
    p_all, o_all = pred.reshape(b, t, -1), target.reshape(b, t, -1)
    rows = []
    for k in thr.tolist():   # one threshold at a time: memory (B, T, pixels), not K times that
        p, o = p_all >= k, o_all >= k
        rows.append(torch.stack([(p & o).sum(-1), (~p & o).sum(-1), (p & ~o).sum(-1),
                                 (~p & ~o).sum(-1)], dim=-1).sum(0))      # (T, 4)
    table = torch.stack(rows, dim=1)                                      # (T, K, 4)
    if not per_frame:
        table = table.sum(0)
    return table[..., 0, :] if scalar else table


def scores(table: Tensor) -> dict[str, Tensor]:
    """``{"csi", "pod", "far", "hss"}`` (float64, NaN where 0/0) from counts (..., 4)."""
    if not isinstance(table, Tensor) or table.dim() < 1 or table.shape[-1] != 4:
        raise ValueError(f"table: expected a tensor (..., 4) of [hits, misses, false alarms, "
                         f"correct negatives], got {getattr(table, 'shape', table)!r}")
    h, m, f, n = table.double().unbind(-1)

    def ratio(num, den):  # 0/0 (and x/0) -> NaN, documented above
        return torch.where(den > 0, num / den.clamp_min(1e-300),
                           torch.full_like(num, float("nan")))

    return {
        "csi": ratio(h, h + m + f),
        "pod": ratio(h, h + m),
        "far": ratio(f, h + f),
        "hss": ratio(2 * (h * n - m * f), (h + m) * (m + n) + (h + f) * (f + n)),
    }


def csi(pred: Tensor, target: Tensor, thresholds) -> Tensor:
    """Critical success index H / (H + M + F) per threshold ((K,), or 0-dim), NaN if 0/0."""
    return scores(contingency(pred, target, thresholds))["csi"]


def pod(pred: Tensor, target: Tensor, thresholds) -> Tensor:
    """Probability of detection H / (H + M) per threshold, NaN when no event is observed."""
    return scores(contingency(pred, target, thresholds))["pod"]


def far(pred: Tensor, target: Tensor, thresholds) -> Tensor:
    """False alarm ratio F / (H + F) per threshold, NaN when no event is predicted."""
    return scores(contingency(pred, target, thresholds))["far"]


def hss(pred: Tensor, target: Tensor, thresholds) -> Tensor:
    """Heidke skill score per threshold (module docstring), NaN when its denominator is 0."""
    return scores(contingency(pred, target, thresholds))["hss"]
