"""The one rollout loop every model of the zoo runs, and the frame checks they share.

Conventions (all models):

- Frames are (B, T, C, H, W).
- ``model(frames, pred_len=N)`` (inference) reads ``T_in = T`` given frames and predicts the
  next N frames autoregressively. A recurrent model runs the standard ``T_in + N - 1``
  steps: step ``t`` reads ``frames[:, t]`` while ``t < T_in`` and its own prediction of
  frame ``t`` afterwards; the last N step outputs are returned, (B, N, C, H, W).
- ``model.forward_train(frames, mask=None)`` (training) reads a whole sequence of
  ``T >= 2`` frames and runs ``T - 1`` steps; step ``t`` predicts frame ``t + 1``. It
  returns a :class:`TrainOutput` whose ``predictions`` (B, T-1, C, H, W) estimate
  ``targets = frames[:, 1:]``. Step ``0`` reads ``frames[:, 0]``; step ``t >= 1`` reads::

      mask[:, t-1] * frames[:, t] + (1 - mask[:, t-1]) * prediction_of_frame_t

  ``mask=None`` is teacher forcing (every step reads the true frame). ``mask`` has shape
  (B, T-2), (B, T-2, 1, 1, 1) or (B, T-2, C, H, W), the layout of PredRNN-v2's reverse
  scheduled sampling (thuml ``reserve_schedule_sampling_exp``); PredRNN's scheduled
  sampling mask (B, T - T_in - 1) covers only the output steps and becomes this layout
  with :func:`fastcells.models.sampling.full_mask` (ones for the input steps). The
  schedules themselves are in :mod:`fastcells.models.sampling`.
- ``model.training_loss(frames, mask=None)`` is the model's training objective: MSE of the
  predictions against their targets plus the model's weighted auxiliary losses.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import backends
from .._checks import check_tensor
from ..cells.base import CellBase


class TrainOutput(NamedTuple):
    """What ``forward_train`` returns.

    predictions: (B, S, C, H, W); targets: the frames they estimate, same shape (a view of
    the input); losses: auxiliary loss terms (scalars) by name, unweighted.
    """

    predictions: Tensor
    targets: Tensor
    losses: dict


def _as_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"frame_size must be H (square) or (H, W) with H, W >= 1, got {size}")
    return size


class Forecaster(nn.Module):
    """What every model of the zoo shares: the frame layout, input checks and ``.backend``.

    Args:
        frame_channels: C of the frames.
        frame_size: (H, W) the model is built for (a preset fixes it), or None for any size
            the architecture allows.
        input_len, pred_len: the configuration's T_in and N; ``pred_len`` is the default of
            ``forward``; ``input_len`` splits sequences for non-recurrent models and profiling.
        backend: passed to every cell (``"auto"``, ``"reference"``, ``"cpp"``).
    """

    def __init__(self, frame_channels: int, frame_size=None, input_len: int = 10,
                 pred_len: int = 10, backend: str = "auto"):
        super().__init__()
        for name, value in (("frame_channels", frame_channels), ("input_len", input_len),
                            ("pred_len", pred_len)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.frame_channels = frame_channels
        self.frame_size = _as_size(frame_size)
        self.input_len, self.pred_len = input_len, pred_len
        self.requested_backend = backends.validate_backend(backend)
        # weights of the auxiliary losses in training_loss, by name (subclasses set them)
        self.loss_weights: dict[str, float] = {}

    @property
    def backend(self) -> str:
        """The backend the cells run for the parameters' current device and dtype."""
        for m in self.modules():
            if isinstance(m, CellBase):
                return m.backend
        return "reference"  # no recurrent cell (STLight): plain PyTorch

    def _like(self) -> Tensor:
        return next(self.parameters())

    def check_frames(self, frames, min_len: int = 1, name: str = "frames") -> None:
        """Checks (B, T, C, H, W) against the model's channels and, when fixed, size."""
        h, w = self.frame_size if self.frame_size is not None else ("H", "W")
        check_tensor(frames, name, ("B", "T", self.frame_channels, h, w), self._like())
        if frames.shape[1] < min_len:
            what = "T_in" if min_len == 1 else "T"
            raise ValueError(f"{name}: {what} = frames.shape[1] must be >= {min_len}, got shape "
                             f"{tuple(frames.shape)}")
        if frames.shape[0] < 1:
            raise ValueError(f"{name}: the batch is empty, got shape {tuple(frames.shape)}")
        self._check_spatial(frames.shape[-2], frames.shape[-1])

    def _check_spatial(self, height: int, width: int) -> None:
        """Architecture limits on (H, W) (pyramid depth, patch size); none by default."""

    def _pred_len(self, pred_len) -> int:
        pred_len = self.pred_len if pred_len is None else pred_len
        if not isinstance(pred_len, int) or isinstance(pred_len, bool) or pred_len < 1:
            raise ValueError(f"pred_len must be an int >= 1, got {pred_len!r}")
        return pred_len

    def training_loss(self, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        """MSE of ``forward_train``'s predictions plus ``loss_weights[k] * losses[k]``."""
        out = self.forward_train(frames, mask)
        loss = F.mse_loss(out.predictions, out.targets)
        for key, value in out.losses.items():
            loss = loss + self.loss_weights.get(key, 1.0) * value
        return loss


class RecurrentForecaster(Forecaster):
    """Base of the recurrent models: subclasses define one step, this class runs the rollout.

    ``step(frame, state, need_aux) -> (prediction, state, aux)``: ``frame`` (B, C, H, W) is
    this step's input, ``state`` ``begin_rollout(num_steps)`` (None) at the first step,
    ``prediction`` (B, C, H, W) the next frame, ``aux`` a dict of per-step auxiliary loss
    terms when ``need_aux`` (training; inference skips computing them) and the model has
    any, else None; ``reduce_aux(list_of_aux)`` turns them into ``TrainOutput.losses``.
    """

    def step(self, frame: Tensor, state, need_aux: bool = False):
        raise NotImplementedError

    def reduce_aux(self, aux: list) -> dict:
        return {}

    def begin_rollout(self, num_steps: int):
        """The state step 0 receives: None, unless a model's steps depend on how many steps
        the rollout runs (RMT's truncated BPTT counts segments back from the last one)."""
        return None

    def forward(self, frames: Tensor, pred_len: int | None = None) -> Tensor:
        """frames (B, T_in, C, H, W) -> the next ``pred_len`` frames (B, N, C, H, W)."""
        self.check_frames(frames)
        n = self._pred_len(pred_len)
        given = frames.unbind(1)
        t_in = len(given)

        def pick(t, previous):
            return given[t] if t < t_in else previous

        predictions, _ = self._rollout(given[0], t_in + n - 1, pick, need_aux=False)
        return predictions[:, t_in - 1:]

    def forward_train(self, frames: Tensor, mask: Tensor | None = None) -> TrainOutput:
        """frames (B, T, C, H, W), T >= 2 -> predictions of frames 1..T-1 (see module doc)."""
        self.check_frames(frames, min_len=2)
        given = frames.unbind(1)
        if mask is None:
            def pick(t, previous):
                return given[t]
        else:
            steps = _check_mask(mask, frames)

            def pick(t, previous):
                m = steps[t - 1]
                return m * given[t] + (1 - m) * previous

        predictions, aux = self._rollout(given[0], len(given) - 1, pick, need_aux=True)
        return TrainOutput(predictions, frames[:, 1:], self.reduce_aux(aux))

    def _rollout(self, first: Tensor, num_steps: int, pick, need_aux: bool):
        """The loop: step 0 reads ``first``, step t >= 1 reads ``pick(t, prediction)``."""
        state, outputs, aux = self.begin_rollout(num_steps), [], []
        x = first
        for t in range(num_steps):
            if t > 0:
                x = pick(t, outputs[-1])
            prediction, state, a = self.step(x, state, need_aux)
            outputs.append(prediction)
            aux.append(a)
        return torch.stack(outputs, dim=1), aux


def _check_mask(mask, frames: Tensor) -> tuple:
    """Validates a sampling mask and returns it per step, each broadcastable to a frame."""
    b, t, c, h, w = frames.shape
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask: expected a Tensor of shape ({b}, {t - 2}) or "
                        f"({b}, {t - 2}, {c}, {h}, {w}), got {type(mask).__name__}")
    if mask.dim() == 2:
        mask = mask[:, :, None, None, None]
    ok = (mask.dim() == 5 and tuple(mask.shape[:2]) == (b, t - 2)
          and all(m in (1, f) for m, f in zip(mask.shape[2:], (c, h, w))))
    if not ok:
        raise ValueError(f"mask: expected shape ({b}, {t - 2}), ({b}, {t - 2}, 1, 1, 1) or "
                         f"({b}, {t - 2}, {c}, {h}, {w}) for frames of shape "
                         f"{tuple(frames.shape)} (one entry per step 1..T-2), got "
                         f"{tuple(mask.shape)}")
    return mask.to(dtype=frames.dtype, device=frames.device).unbind(1)
