"""The training loop: one :class:`Trainer` per run, resumable exactly, DDP-ready.

Runs under ``torchrun`` as well as alone: with ``WORLD_SIZE > 1`` in the environment each
process trains on its slice of every global batch (``batch_size`` sequences per process)
and DistributedDataParallel averages the gradients, so N processes with batch b follow the
same trajectory as one process with batch N*b (without sampling masks, which each process
draws for its own slice). Only rank 0 writes logs, plots and
checkpoints.
"""
from __future__ import annotations

import math
import os
import random
import re
import sys
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .. import data as fc_data
from .._argtypes import ensure_writable_dir
from .._checks import check_device
from .. import models
from ..cells.base import CellBase
from ..models.e_convlstm import temporal_consistency_loss
from ..models.sampling import (
    reverse_sampling_etas,
    reverse_scheduled_sampling_mask,
    scheduled_sampling_eta,
    scheduled_sampling_mask,
)
from . import checkpoint as ckpt_io
from . import plots
from .config import TrainConfig
from .ema import EMA
from .evaluate import evaluate_model, reset_sampling
from .logs import RunLog
from .rundir import RunLock, remove_orphan_saves
from .schedules import lr_factor, make_scheduler


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class _TrainStep(nn.Module):
    """``forward_train`` as a module's forward, so DistributedDataParallel sees the call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frames, mask):
        out = self.model.forward_train(frames, mask)
        return out.predictions, out.targets, out.losses


def _distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size), initialising the process group when torchrun asked for one:
    NCCL for CUDA training, gloo for CPU training."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def run_dataset(cfg: TrainConfig, model: nn.Module, length: int, spec: str | None = None,
                progress: bool = True):
    """The dataset ``spec`` (default the run's ``cfg.data``) with sequences of ``length``
    frames, checked against the model (the synthetic data is generated at its frame size)
    and, every sequence, for values (finite, in [0, 1]) before any step reads it."""
    spec = spec or cfg.data
    dataset = fc_data.build_dataset(spec, seq_len=length, num_sequences=cfg.num_sequences,
                                    image_size=(model.frame_size or (64, 64))[0], seed=cfg.seed)
    check_sequences(dataset, model, length, spec)
    fc_data.check_values(dataset, spec, progress=progress)
    return dataset


def check_sequences(dataset, model: nn.Module, length: int, spec: str) -> None:
    """The data must hold sequences of ``length`` frames of the model's frame shape."""
    if len(dataset) == 0:
        raise ValueError(f"data: {spec!r} holds no sequences")
    first = dataset[0]
    if first.dim() != 4 or first.shape[0] != length:
        raise ValueError(f"data: {spec!r} gives sequences of shape {tuple(first.shape)}; the "
                         f"model needs (T, C, H, W) with T = {length} (input_len + pred_len "
                         f"frames)")
    c, h, w = first.shape[1:]
    want = (model.frame_channels, *(model.frame_size or (h, w)))
    if (c, h, w) != tuple(want):
        args = {}
        if (h, w) != tuple(want[1:]):
            args["frame_size"] = (h, w)
        if c != want[0]:
            args["frame_channels"] = c
        flags = " ".join(f"--model-arg {k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                         for k, v in args.items())
        raise ValueError(f"data: {spec!r} has frames of (C, H, W) = {(c, h, w)}; the model "
                         f"is built for {tuple(want)}. Build it for this data: {flags} "
                         f"(Python: model_args={args})")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data``; ``resume=True`` continues ``<out_dir>/last.pt``
    (or the checkpoint path given) exactly where it stopped. A fresh run refuses an
    ``out_dir`` that holds one already unless ``overwrite``.

    Files in ``cfg.out_dir``: ``config.json``, ``train.jsonl|csv`` (per update),
    ``val.jsonl|csv`` (per evaluation, with per-frame curves), ``last.pt`` and ``best.pt``
    (atomic), ``loss_curves.png``, ``per_frame_metrics.png``, ``predictions.png|gif``.
    """

    def __init__(self, cfg: TrainConfig, resume: bool | str = False, progress: bool = True,
                 overwrite: bool = False, break_lock: bool = False):
        self.cfg = cfg
        self.device = check_device(cfg.device)
        self.rank, self.world = _distributed(self.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.progress = progress and self.rank == 0
        self.last_checkpoint_step = None  # the step of the newest last.pt (None: none yet)
        self.last_checkpoint_path = None
        self.lock = None
        if self.rank == 0:
            try:
                ensure_writable_dir(cfg.out_dir)
            except OSError as e:
                raise PermissionError(f"out_dir: cannot write to {cfg.out_dir!r} ({e})") from e
            # The directory is this run's until fit() returns (or close()): a second run or
            # resume on it is refused instead of interleaving logs and checkpoints. Taken
            # before the model and data are built, so a refusal costs nothing.
            self.lock = RunLock(cfg.out_dir, force=break_lock).acquire()
        try:
            self._build(bool(resume))
            self._open_run(resume, overwrite)
        except BaseException:
            self.close()
            raise

    def _build(self, resuming: bool) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed)
        # A checkpoint written before create() refused overrides the model ignores may hold
        # one: the run it resumes ran without it, so it is dropped with a warning.
        model_args = (models.without_ignored_overrides(cfg.model, cfg.model_args)
                      if resuming else cfg.model_args)
        self.model = models.create(cfg.model, preset=cfg.preset, backend=cfg.backend,
                                   **model_args).to(self.device)
        if cfg.temporal_weight and "temporal_consistency" in self.model.loss_weights:
            raise ValueError(f"temporal_weight: {cfg.model} adds the temporal-consistency loss "
                             f"itself (weight {self.model.loss_weights['temporal_consistency']}); "
                             f"leave temporal_weight at 0")
        if getattr(self.model, "predicts_noise", False):
            # l1/temporal terms compare predicted frames; a diffusion model's training
            # predictions are noise estimates, on which they are no objective of the model
            given = [f"{name}={getattr(cfg, name)}" for name in ("l1_weight", "temporal_weight")
                     if getattr(cfg, name)]
            if given:
                raise ValueError(f"{', '.join(given)}: {cfg.model} trains on its diffusion loss "
                                 f"(forward_train predicts the noise, not frames), so frame "
                                 f"losses do not apply; leave l1_weight and temporal_weight "
                                 f"at 0")
        self.input_len = cfg.input_len or self.model.input_len
        self.pred_len = cfg.pred_len or self.model.pred_len
        self._set_checkpoint_layers(cfg.checkpoint_layers)
        self.total_len = self.input_len + self.pred_len
        dataset = run_dataset(cfg, self.model, self.total_len, progress=self.progress)
        self.train_set, self.val_set = fc_data.split(dataset, cfg.val_fraction, cfg.seed)
        self.global_batch = cfg.batch_size * self.world
        if len(self.train_set) < self.global_batch:
            raise ValueError(f"data: {len(self.train_set)} training sequences, fewer than one "
                             f"global batch of {self.global_batch} (batch_size x processes)")

        self.step_module = _TrainStep(self.model)
        if self.world > 1:
            self.step_module = nn.parallel.DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda"
                else None)
        opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.step, self.best_val, self.bad_evals = 0, math.inf, 0

    def _open_run(self, resume, overwrite: bool) -> None:
        cfg = self.cfg
        if self.rank == 0:
            remove_orphan_saves(cfg.out_dir, report=lambda line: print(line, file=sys.stderr))
        self.train_log = RunLog(cfg.out_dir, "train", cfg.tensorboard and self.rank == 0)
        self.val_log = RunLog(cfg.out_dir, "val")
        if resume:
            self._resume(resume if isinstance(resume, str) else
                         os.path.join(cfg.out_dir, "last.pt"))
        elif self.rank == 0:
            if os.path.exists(os.path.join(cfg.out_dir, "last.pt")) and not overwrite:
                raise FileExistsError(
                    f"out_dir: {cfg.out_dir!r} already holds a run (last.pt); resume it "
                    f"(--resume), pick another directory, or pass overwrite=True (--overwrite)")
            for log in (self.train_log, self.val_log):
                log.truncate_after(-1)
        if self.rank == 0:
            import json
            with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:
                json.dump(cfg.to_dict(), f, indent=1)

    def close(self) -> None:
        """Releases the run directory (fit() does so when it returns or raises)."""
        if self.lock is not None:
            self.lock.release()

    # -- setup ----------------------------------------------------------------------------------
    def _set_checkpoint_layers(self, layers) -> None:
        cells = [m for m in self.model.modules() if isinstance(m, CellBase)]
        if layers is None:
            return
        chosen = range(len(cells)) if layers == "all" else layers
        for i in chosen:
            if not 0 <= i < len(cells):
                raise ValueError(f"checkpoint_layers: the model has {len(cells)} recurrent "
                                 f"layers (0..{len(cells) - 1}), got {i}")
            cells[i].memory_efficient = True

    # -- data -----------------------------------------------------------------------------------
    def _batches_per_epoch(self) -> int:
        return len(self.train_set) // self.global_batch

    def _batch(self, index: int) -> torch.Tensor:
        """This process's slice of global batch ``index`` (counted over the whole run): the
        order is a permutation per epoch from (seed, epoch), so a resumed run sees the same
        batches."""
        per_epoch = self._batches_per_epoch()
        epoch, b = divmod(index, per_epoch)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_set), generator=gen)
        start = b * self.global_batch + self.rank * self.cfg.batch_size
        ids = order[start:start + self.cfg.batch_size].tolist()
        return torch.stack([self.train_set[i] for i in ids]).to(self.device)

    def _mask(self, micro: int, batch: int):
        """The sampling mask of this update's micro-batch (seeded by step: resumable)."""
        cfg = self.cfg
        if cfg.sampling == "none":
            return None
        gen = torch.Generator().manual_seed(
            (cfg.seed * 1_000_003 + self.step * 131 + micro) * self.world + self.rank)
        itr = self.step + 1  # thuml counts iterations from 1
        if cfg.sampling == "scheduled":
            eta = scheduled_sampling_eta(itr, cfg.sampling_stop_iter, 1.0,
                                         cfg.sampling_changing_rate)
            mask = scheduled_sampling_mask(eta, batch, self.input_len, self.total_len, gen)
        else:
            r_eta, eta = reverse_sampling_etas(itr, cfg.r_sampling_step_1, cfg.r_sampling_step_2,
                                               cfg.r_exp_alpha)
            mask = reverse_scheduled_sampling_mask(r_eta, eta, batch, self.input_len,
                                                   self.total_len, gen)
        return mask.to(self.device)

    # -- one update -----------------------------------------------------------------------------
    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _loss(self, frames, mask) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        with self._autocast():
            pred, target, aux = self.step_module(frames, mask)
        pred, target = pred.float(), target.float()
        parts = {}
        if cfg.l2_weight:
            parts["mse"] = cfg.l2_weight * F.mse_loss(pred, target)
        if cfg.l1_weight:
            parts["l1"] = cfg.l1_weight * F.l1_loss(pred, target)
        if cfg.temporal_weight:
            parts["temporal"] = cfg.temporal_weight * temporal_consistency_loss(pred, target)
        for key, value in aux.items():
            parts[key] = self.model.loss_weights.get(key, 1.0) * value.float()
        return sum(parts.values()), {k: v.item() for k, v in parts.items()}

    def train_step(self) -> dict:
        """One optimizer update over ``accum_steps`` micro-batches; returns its log record."""
        cfg = self.cfg
        self.model.train()
        t0 = time.perf_counter()
        total, parts_sum = 0.0, {}
        for micro in range(cfg.accum_steps):
            frames = self._batch(self.step * cfg.accum_steps + micro)
            loss, parts = self._loss(frames, self._mask(micro, frames.shape[0]))
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at step {self.step + 1}; stopped without saving. "
                    f"The last good checkpoint is {os.path.join(cfg.out_dir, 'last.pt')} "
                    f"(if one was written): resume from it with a lower lr or clip_grad")
            self.scaler.scale(loss / cfg.accum_steps).backward()
            total += loss.item() / cfg.accum_steps
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v / cfg.accum_steps
        if cfg.clip_grad > 0 or not self.scaler.is_enabled():
            # the global norm clips, and shows non-finite gradients that would otherwise
            # write NaN into the weights (fp16's GradScaler skips those steps itself)
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                  cfg.clip_grad if cfg.clip_grad > 0 else math.inf)
            if not self.scaler.is_enabled() and not torch.isfinite(norm):
                raise TrainingDiverged(
                    f"gradient norm is {norm.item()} at step {self.step + 1}; stopped without "
                    f"updating. The last good checkpoint is "
                    f"{os.path.join(cfg.out_dir, 'last.pt')} (if one was written): resume from "
                    f"it with a lower lr or clip_grad")
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # fp16: the GradScaler skips updates with inf grads while it finds its scale;
            # the schedule still advances by attempted updates (resumes reproduce it)
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        seconds = time.perf_counter() - t0
        return {"step": self.step, "loss": total, "lr": lr, "seconds": seconds,
                "sequences_per_s": cfg.batch_size * cfg.accum_steps * self.world / seconds,
                **parts_sum}

    # -- the run --------------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> dict:
        """Trains until ``cfg.steps`` updates (or ``stop_at``, to interrupt a run on purpose,
        or early stopping). Returns the last validation record (None if none ran)."""
        if self.lock is not None:
            self.lock.acquire()  # again, when fit() runs a second time
        try:
            return self._fit(stop_at)
        finally:
            self.close()

    def _fit(self, stop_at: int | None) -> dict:
        from tqdm.auto import tqdm

        cfg = self.cfg
        end = min(cfg.steps, stop_at or cfg.steps)
        last_val = None
        if 0 < cfg.early_stopping <= self.bad_evals:  # a resumed run that had stopped early
            return None
        if self.step == 0:  # the starting point of the validation curve
            last_val = self.evaluate()
        bar = tqdm(total=end, initial=self.step, disable=not self.progress, unit="step",
                   desc=f"train {cfg.model}")
        try:
            while self.step < end:
                record = self.train_step()
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.2g}",
                                seq_s=f"{record['sequences_per_s']:.1f}")
                if self.rank == 0:
                    self.train_log.write(record)
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    last_val = self.evaluate()
                    if self._early_stop(last_val):
                        self._checkpoint()
                        break
                if self.step % cfg.checkpoint_every == 0 or self.step == end:
                    self._checkpoint()
        finally:  # the bar's last line before any message about why the loop ended
            bar.close()
        if self.rank == 0 and last_val is not None:
            self.plot(last_val)
        return last_val

    def _early_stop(self, val: dict) -> bool:
        score = val["mse_per_frame"]
        if score < self.best_val:
            self.best_val, self.bad_evals = score, 0
            self._checkpoint("best.pt")
            return False
        self.bad_evals += 1
        return 0 < self.cfg.early_stopping <= self.bad_evals

    def evaluate(self, max_batches: int | None = None) -> dict:
        """Autoregressive prediction of the validation set: the model reads ``input_len``
        frames and predicts ``pred_len`` (the EMA weights when ``ema_decay`` > 0)."""
        model = self.ema.module if self.ema is not None else self.model
        result = evaluate_model(model, self.val_set, self.input_len, self.pred_len,
                                self.cfg.batch_size, self.device,
                                max_batches or self.cfg.eval_batches or None,
                                progress=self.progress)
        record = {"step": self.step, **result}
        if self.rank == 0:
            self.val_log.write(record)
        return record

    # -- checkpoints ----------------------------------------------------------------------------
    def state(self) -> dict:
        return {"format": "fastcells-train-1", "config": self.cfg.to_dict(),
                "model_name": self.cfg.model, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "rng": ckpt_io.rng_state(), "step": self.step, "best_val": self.best_val,
                "bad_evals": self.bad_evals}

    def _checkpoint(self, name: str = "last.pt") -> None:
        if self.rank == 0:
            path = os.path.join(self.cfg.out_dir, name)
            ckpt_io.save_atomic(self.state(), path)
            if name == "last.pt":
                self.last_checkpoint_step, self.last_checkpoint_path = self.step, path

    def _resume(self, path: str) -> None:
        saved = ckpt_io.load(path)
        mismatch = self.cfg.resume_mismatch(saved["config"])
        if mismatch:
            raise ValueError(f"resume: {path!r} was trained with another model/config: "
                             + "; ".join(mismatch))
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if saved["config"].get("steps") != self.cfg.steps:
            # A longer (or shorter) run: the schedule is the new length's from here on, and
            # so is the lr of the next update (the loaded optimizer holds the old schedule's,
            # e.g. 0 at the end of a finished cosine run).
            for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
                group["lr"] = base * lr_factor(self.cfg, saved["step"])
            self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        self.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None and saved["ema"] is not None:
            self.ema.load_state_dict(saved["ema"])
        self.step, self.best_val = saved["step"], saved["best_val"]
        self.bad_evals = saved["bad_evals"]
        self.last_checkpoint_step, self.last_checkpoint_path = self.step, path
        ckpt_io.set_rng_state(saved["rng"])
        if self.rank == 0:  # records past the checkpoint are redone by this run
            for log in (self.train_log, self.val_log):
                log.truncate_after(self.step)

    # -- pictures -------------------------------------------------------------------------------
    def plot(self, val: dict | None = None) -> None:
        out = self.cfg.out_dir
        plots.loss_curves(self.train_log.read(), self.val_log.read(),
                          os.path.join(out, "loss_curves.png"))
        if val is not None:
            plots.per_frame_metrics({k: val[f"{k}_curve"] for k in ("mse_per_frame", "ssim",
                                                                     "psnr")},
                                    os.path.join(out, "per_frame_metrics.png"))
        write_predictions(self.ema.module if self.ema is not None else self.model,
                          self.val_set[0], self.input_len, self.pred_len, self.device, out)


@torch.no_grad()
def write_predictions(model: nn.Module, sequence: torch.Tensor, input_len: int, pred_len: int,
                      device, out_dir: str, name: str = "predictions",
                      reset: bool = True) -> tuple[str, str]:
    """PNG strip (input / truth / prediction) and GIF (truth | prediction) of one sequence
    (T, C, H, W); returns their paths. ``reset``: restart a sampling model's noise first
    (:func:`~fastcells.train.evaluate.reset_sampling`; False continues it, so several
    sequences drawn in a row get independent noise)."""
    was_training = model.training
    model.eval()
    if reset:
        reset_sampling(model)
    frames = sequence[None].to(device)
    pred = model(frames[:, :input_len], pred_len=pred_len)[0].float().cpu().numpy()
    model.train(was_training)
    seq = sequence.float().cpu().numpy()
    png, gif = (os.path.join(out_dir, f"{name}.{ext}") for ext in ("png", "gif"))
    plots.prediction_strip(seq[:input_len], seq[input_len:input_len + pred_len], pred, png)
    plots.prediction_gif(seq[input_len:input_len + pred_len], pred, gif)
    return png, gif
