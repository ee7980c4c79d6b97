"""Learning-rate schedules, as multipliers of the base ``lr`` per optimizer update."""
from __future__ import annotations

import math

import torch

from .config import TrainConfig


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """The lr multiplier at update ``step`` (0-based).

    - constant: 1 after a linear warm-up of ``warmup_steps``;
    - cosine: warm-up, then cosine decay to ``min_lr_ratio`` at ``steps``;
    - onecycle: linear warm-up (``warmup_steps``, default 30% of the run) from 1/25, then
      cosine annealing to ``min_lr_ratio`` (as ``torch.optim.lr_scheduler.OneCycleLR``'s
      cosine strategy; momentum is not cycled);
    - cyclic: warm-up, then triangular cycles of ``cycle_steps`` between 1 and
      ``min_lr_ratio``, starting at 1.
    """
    low = cfg.min_lr_ratio
    if cfg.schedule == "onecycle":
        warm = cfg.warmup_steps or max(1, int(0.3 * cfg.steps))
        if step < warm:
            return 1 / 25 + (1 - 1 / 25) * step / warm
        progress = min(1.0, (step - warm) / max(1, cfg.steps - warm))
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    after = step - cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        progress = min(1.0, after / max(1, cfg.steps - cfg.warmup_steps))
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))
    # cyclic (triangular), starting at the peak the warm-up reached: down for half a cycle,
    # up for the other half
    phase = (after / cfg.cycle_steps + 0.5) % 1.0
    return low + (1 - low) * (1 - abs(2 * phase - 1))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step))
