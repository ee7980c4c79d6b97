"""Everything a training run is made of, as one serialisable config.

A checkpoint stores the config it was trained with; ``--resume`` refuses a checkpoint whose
settings differ in anything but :attr:`TrainConfig.RESUME_MAY_CHANGE`
(:meth:`TrainConfig.resume_mismatch`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .._checks import check_int

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

    # What a resumed run may change: how long it runs (the lr schedule is rebuilt for the
    # new length, Trainer._resume), how often it evaluates and saves, where and with which
    # kernels (same math). Everything else shapes the trajectory, so it must match the
    # checkpoint: a changed lr would be overridden by the optimizer state it loads.
    RESUME_MAY_CHANGE = ("steps", "eval_every", "eval_batches", "checkpoint_every",
                         "early_stopping", "device", "out_dir", "tensorboard", "backend",
                         "checkpoint_layers")

    def __post_init__(self):
        self.validate()

    def _check_types(self) -> None:
        """Each field has its default's type (a config file can hold "0.5" for 0.5)."""
        for f in dataclasses.fields(self):
            value, default = getattr(self, f.name), f.default
            if f.name in ("input_len", "pred_len"):
                if value is not None:
                    check_int(f.name, value)
            elif f.name == "preset":
                if value is not None and not isinstance(value, str):
                    raise TypeError(f"preset: expected a preset name or null, got {value!r}")
            elif f.name == "model_args":
                if not isinstance(value, dict):
                    raise TypeError(f"model_args: expected a mapping of constructor arguments, "
                                    f"got {value!r}")
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError(f"{f.name}: expected true or false, got {value!r}")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"{f.name}: expected an integer, got {value!r} "
                                    f"({type(value).__name__})")
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"{f.name}: expected a number, got {value!r} "
                                    f"({type(value).__name__})")
            elif isinstance(default, str) and not isinstance(value, str):
                raise TypeError(f"{f.name}: expected a string, got {value!r}")

    def validate(self) -> None:
        self._check_types()
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
        for name in ("clip_grad", "weight_decay", "l2_weight", "l1_weight", "temporal_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

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
        """Settings that differ between this config and a checkpoint's and may not change on
        resume (:attr:`RESUME_MAY_CHANGE`): resume refuses them all, listed."""
        now = self.to_dict()
        return [f"{k}: checkpoint {_plain(saved.get(k))!r}, now {_plain(now[k])!r}"
                for k in now if k not in self.RESUME_MAY_CHANGE
                and _plain(saved.get(k)) != _plain(now[k])]


# One line per field for `fastcells train --help` (allowed values in the text or choices).
FIELD_HELP = {
    "model": "zoo model name (fastcells.models.list_models())",
    "preset": "the model's preset (mmnist, taxibj, kth, ...; 'none' for none)",
    "backend": "auto, reference, cpp, triton or cuda",
    "data": "dataset: synthetic (built-in Moving MNIST), a .npy/.npz file, a folder of "
            "frames, a Moving MNIST .npy, a TaxiBJ .h5, cityscapes:<path> (README: Data)",
    "num_sequences": "sequences of the synthetic data, int >= 1",
    "input_len": "input frames, int >= 1 (default: the preset's)",
    "pred_len": "predicted frames, int >= 1 (default: the preset's)",
    "val_fraction": "share of the sequences held out for validation, in (0, 1)",
    "batch_size": "sequences per batch and process, int >= 1",
    "steps": "optimizer updates, int >= 1",
    "optimizer": "adam or adamw",
    "lr": "learning rate, > 0",
    "weight_decay": "weight decay, >= 0",
    "schedule": "lr schedule: constant, cosine, onecycle or cyclic",
    "warmup_steps": "linear lr warm-up updates, int >= 0",
    "cycle_steps": "updates per cycle of the cyclic schedule, int >= 1",
    "min_lr_ratio": "lowest lr of cosine/onecycle/cyclic as a fraction of lr, in [0, 1]",
    "clip_grad": "max global gradient norm, >= 0 (0 = off)",
    "accum_steps": "micro-batches per update (gradient accumulation), int >= 1",
    "precision": "fp32, bf16 or fp16 (fp16 with a GradScaler)",
    "ema_decay": "exponential moving average of the weights, in [0, 1) (0 = off)",
    "l2_weight": "weight of the MSE loss, >= 0",
    "l1_weight": "weight of the L1 loss, >= 0",
    "temporal_weight": "weight of seed 000's temporal-consistency loss, >= 0",
    "sampling": "none (teacher forcing), scheduled (PredRNN) or reverse (PredRNN-v2)",
    "sampling_stop_iter": "scheduled sampling: iteration where eta reaches 0, int >= 0",
    "sampling_changing_rate": "scheduled sampling: eta's decrease per iteration",
    "r_sampling_step_1": "reverse sampling: first phase's end, int >= 0",
    "r_sampling_step_2": "reverse sampling: second phase's end, int >= 0",
    "r_exp_alpha": "reverse sampling: exponential's scale",
    "eval_every": "validate every N updates, int >= 1",
    "eval_batches": "validation batches per evaluation, int >= 0 (0 = all)",
    "checkpoint_every": "write last.pt every N updates, int >= 1",
    "early_stopping": "stop after N evaluations without improvement, int >= 0 (0 = off)",
    "seed": "random seed (data split, order, initialisation), int",
    "device": "cpu, cuda or cuda:N",
}


def _plain(value):
    """JSON's view of a value: tuples and lists compare equal (config.json holds lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
