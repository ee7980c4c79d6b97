"""Everything a training run is made of, as one serialisable config.

A checkpoint stores the config it was trained with; ``--resume`` refuses a checkpoint whose
model or data settings differ (:meth:`TrainConfig.resume_mismatch`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle", "cyclic")
SAMPLING = ("none", "scheduled", "reverse")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """A training run. Lengths are in frames; ``steps`` counts optimizer updates.

    Model: ``model`` (a :func:`fastcells.models.list_models` name), ``preset``,
    ``model_args`` (constructor overrides, e.g. ``{"hidden_size": 16}``), ``backend``,
    ``checkpoint_layers`` (recurrent layers that recompute their step in backward, fastcells'
    memory-efficient mode: a list of layer indices, or ``"all"``).

    Data: ``data`` (a :func:`fastcells.data.build_dataset` spec, default the built-in
    synthetic Moving MNIST), ``num_sequences`` (synthetic only), ``input_len``, ``pred_len``
    (None: the preset's), ``val_fraction``, ``batch_size`` (per process).

    Optimisation: ``optimizer`` (adam, adamw), ``lr``, ``weight_decay``, ``schedule``
    (constant, cosine, onecycle, cyclic), ``warmup_steps``, ``cycle_steps`` (cyclic),
    ``min_lr_ratio``, ``clip_grad`` (max global norm, 0 = off), ``accum_steps`` (gradient
    accumulation: micro-batches per update), ``precision`` (fp32, bf16, fp16; fp16 uses a
    GradScaler), ``ema_decay`` (0 = off; evaluation then uses the averaged weights).

    Loss: ``l2_weight`` * MSE + ``l1_weight`` * L1 + ``temporal_weight`` * seed 000's
    temporal-consistency loss + the model's own weighted auxiliary losses (PredRNN-v2's
    decoupling term).

    Sampling: ``sampling`` none (teacher forcing), scheduled (PredRNN) or reverse
    (PredRNN-v2), with thuml's schedule parameters (``sampling_stop_iter``,
    ``sampling_changing_rate``, ``r_sampling_step_1``, ``r_sampling_step_2``,
    ``r_exp_alpha``).

    Run: ``eval_every``, ``eval_batches`` (0 = the whole validation set),
    ``checkpoint_every``, ``early_stopping`` (evaluations without improvement before
    stopping, 0 = off), ``seed``, ``device``, ``out_dir``, ``tensorboard``.
    """

    model: str = "convlstm"
    preset: str | None = "mmnist"
    model_args: dict = field(default_factory=dict)
    backend: str = "auto"
    checkpoint_layers: list | str | None = None

    data: str = "synthetic"
    num_sequences: int = 2000
    input_len: int | None = None
    pred_len: int | None = None
    val_fraction: float = 0.1
    batch_size: int = 8

    steps: int = 1000
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    cycle_steps: int = 1000
    min_lr_ratio: float = 0.0
    clip_grad: float = 0.0
    accum_steps: int = 1
    precision: str = "fp32"
    ema_decay: float = 0.0

    l2_weight: float = 1.0
    l1_weight: float = 0.0
    temporal_weight: float = 0.0

    sampling: str = "none"
    sampling_stop_iter: int = 50000
    sampling_changing_rate: float = 0.00002
    r_sampling_step_1: int = 25000
    r_sampling_step_2: int = 50000
    r_exp_alpha: float = 5000.0

    eval_every: int = 100
    eval_batches: int = 0
    checkpoint_every: int = 100
    early_stopping: int = 0
    seed: int = 0
    device: str = "cpu"
    out_dir: str = "runs/fastcells"
    tensorboard: bool = False

    # what must match for a checkpoint to resume this run
    _RESUME_KEYS = ("model", "preset", "model_args", "data", "num_sequences", "input_len",
                    "pred_len", "val_fraction", "seed", "optimizer", "schedule", "precision",
                    "ema_decay", "l2_weight", "l1_weight", "temporal_weight")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("sampling", SAMPLING), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        for name in ("steps", "batch_size", "accum_steps", "eval_every", "checkpoint_every",
                     "num_sequences", "cycle_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        for name in ("warmup_steps", "early_stopping", "eval_batches"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        if not isinstance(values, dict):
            raise TypeError(f"config: expected a JSON object of TrainConfig fields, got "
                             f"{type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"config: unknown keys {unknown}")
        return cls(**values)

    def resume_mismatch(self, saved: dict) -> list[str]:
        """Settings that differ between this config and a checkpoint's (resume refuses)."""
        now = self.to_dict()
        return [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in self._RESUME_KEYS
                if saved.get(k) != now[k]]
