"""PredRNN's scheduled sampling and PredRNN-v2's reverse scheduled sampling.

The schedules follow thuml/predrnn-pytorch ``run.py`` (``schedule_sampling`` and
``reserve_schedule_sampling_exp``), with the same defaults; the masks have the layout that
``forward_train`` reads (see :mod:`fastcells.models.rollout`): one entry per step
``1 .. T-2``, 1 meaning "read the true frame", 0 "read the model's own prediction".

Scheduled sampling (PredRNN): thuml starts at ``eta = sampling_start_value`` and, at every
iteration ``itr = 1, 2, ...``, subtracts ``sampling_changing_rate`` while
``itr < sampling_stop_iter`` and sets ``eta = 0`` from then on; so after iteration ``itr``
``eta = start - rate * itr`` (``itr < stop``), else 0. Each output step
(``t >= input_len``) reads the true frame with probability ``eta``; input steps always do.

Reverse scheduled sampling (PredRNN-v2): for ``itr < r_sampling_step_1`` both
probabilities are 0.5; between the two steps the input steps' probability ``r_eta`` rises
as ``1 - 0.5 exp(-(itr - step_1) / r_exp_alpha)`` and the output steps' ``eta`` falls
linearly from 0.5 to 0; from ``r_sampling_step_2`` on, ``r_eta = 1`` and ``eta = 0``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def scheduled_sampling_eta(itr: int, sampling_stop_iter: int = 50000,
                           sampling_start_value: float = 1.0,
                           sampling_changing_rate: float = 0.00002) -> float:
    """The probability of reading the true frame at output steps after iteration ``itr``."""
    if itr < sampling_stop_iter:
        return sampling_start_value - sampling_changing_rate * itr
    return 0.0


def reverse_sampling_etas(itr: int, r_sampling_step_1: float = 25000,
                          r_sampling_step_2: float = 50000,
                          r_exp_alpha: float = 5000) -> tuple[float, float]:
    """``(r_eta, eta)``: true-frame probabilities of the input steps and the output steps."""
    if itr < r_sampling_step_1:
        return 0.5, 0.5
    if itr < r_sampling_step_2:
        r_eta = 1.0 - 0.5 * math.exp(-float(itr - r_sampling_step_1) / r_exp_alpha)
        eta = 0.5 - (0.5 / (r_sampling_step_2 - r_sampling_step_1)) * (itr - r_sampling_step_1)
        return r_eta, eta
    return 1.0, 0.0


def _bernoulli(p: float, shape, generator, device) -> Tensor:
    # uniform < p as thuml does (np.random.random_sample < eta), so p <= 0 gives no ones
    u = torch.rand(shape, generator=generator, device=device)
    return (u < p).float()


def _check_lengths(batch: int, input_len: int, total_len: int) -> None:
    if batch < 1 or input_len < 1 or total_len < input_len + 1:
        raise ValueError(f"need batch >= 1, input_len >= 1 and total_len >= input_len + 1, "
                         f"got batch={batch}, input_len={input_len}, total_len={total_len}")


def scheduled_sampling_mask(eta: float, batch: int, input_len: int, total_len: int,
                            generator: torch.Generator | None = None,
                            device=None) -> Tensor:
    """(batch, total_len - 2) mask: ones at the ``input_len - 1`` input steps, Bernoulli(eta)
    at the ``total_len - input_len - 1`` output steps."""
    _check_lengths(batch, input_len, total_len)
    ones = torch.ones(batch, input_len - 1, device=device)
    out = _bernoulli(eta, (batch, total_len - input_len - 1), generator, device)
    return torch.cat([ones, out], dim=1)


def reverse_scheduled_sampling_mask(r_eta: float, eta: float, batch: int, input_len: int,
                                    total_len: int, generator: torch.Generator | None = None,
                                    device=None) -> Tensor:
    """(batch, total_len - 2) mask: Bernoulli(r_eta) at the input steps, Bernoulli(eta) at the
    output steps (thuml draws the input steps first, then the output steps)."""
    _check_lengths(batch, input_len, total_len)
    inp = _bernoulli(r_eta, (batch, input_len - 1), generator, device)
    out = _bernoulli(eta, (batch, total_len - input_len - 1), generator, device)
    return torch.cat([inp, out], dim=1)


def full_mask(output_mask: Tensor, input_len: int) -> Tensor:
    """A PredRNN-style mask over the output steps only, (B, T - T_in - 1, ...), as the
    (B, T - 2, ...) mask ``forward_train`` reads: ones prepended for the input steps."""
    if not isinstance(output_mask, Tensor) or output_mask.dim() < 2:
        raise ValueError("output_mask: expected a tensor of shape (B, T - input_len - 1, ...)")
    if input_len < 1:
        raise ValueError(f"input_len must be >= 1, got {input_len}")
    ones = output_mask.new_ones((output_mask.shape[0], input_len - 1, *output_mask.shape[2:]))
    return torch.cat([ones, output_mask], dim=1)
