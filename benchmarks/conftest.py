"""Shared plumbing of the pytest-benchmark suites (``make bench``; never part of ``make test``).

    pytest benchmarks --benchmark-group-by=group --benchmark-columns=median,iqr,rounds

Devices and dtypes: fp32 on CPU; fp32 and bf16 on CUDA when a GPU is present. Environment:

- ``FASTCELLS_BENCH_SIZES``: comma-separated named sizes (default ``small,large,radar``);
- ``FASTCELLS_BENCH_COMPILE=0``: skip the ``torch.compile(reference)`` baseline;
- ``FASTCELLS_BENCH_DEVICES``: e.g. ``cpu`` to skip CUDA on a GPU machine;
- ``FASTCELLS_BENCH_BATCH``: batch of the training suite (default 16 on CUDA, 1 on CPU).

On CUDA every timed round ends with ``torch.cuda.synchronize()``, so a round's wall time
covers the kernels it launched. Workloads that need the C++ extension are skipped without
it; Triton never runs on CPU here (its interpreter is a test vehicle, not a backend).
"""
from __future__ import annotations

import os

import torch

from fastcells.bench import workloads


def _env_list(name: str, default: str) -> list[str]:
    return [s for s in os.environ.get(name, default).split(",") if s]


SIZE_NAMES = _env_list("FASTCELLS_BENCH_SIZES", ",".join(workloads.SIZES))
for _s in SIZE_NAMES:
    if _s not in workloads.SIZES:
        raise ValueError(f"FASTCELLS_BENCH_SIZES: unknown size {_s!r}; known: "
                         f"{list(workloads.SIZES)}")
COMPILE = os.environ.get("FASTCELLS_BENCH_COMPILE", "1") != "0"


def device_dtypes() -> list[tuple[str, torch.dtype]]:
    """(device, dtype) pairs benchmarked on this machine."""
    wanted = _env_list("FASTCELLS_BENCH_DEVICES", "cpu,cuda")
    pairs = [("cpu", torch.float32)] if "cpu" in wanted else []
    if "cuda" in wanted and torch.cuda.is_available():
        pairs += [("cuda", torch.float32), ("cuda", torch.bfloat16)]
    return pairs


def variants_for(kind: str, cell: str, device: str, dtype) -> list[str]:
    pick = workloads.gate_variants if kind == "gates" else workloads.step_variants
    return [v for v in pick(cell, device, dtype) if COMPILE or v != "compiled"]


def rounds_for(size_name: str, kind: str) -> int:
    """Few rounds for the big sizes, so the suite runs on a CPU in reasonable time."""
    if size_name == "small":
        return 15 if kind == "gates" else 7
    return 5 if kind == "gates" else 3


def timed(fn, device: str):
    """``fn`` followed by a CUDA synchronize on a GPU (pytest-benchmark times wall clock)."""
    if torch.device(device).type != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize()
    return run


class _LastWorkload:
    """Keeps the last workload built, so the fwd and fwd+bwd tests of one (cell, variant,
    size) share its inputs and compiled graphs (the cases are ordered for this)."""

    key = None
    value = None

    def get(self, key, build):
        if key != self.key:
            self.key, self.value = None, None  # free the previous one first
            if "compiled" in key:
                torch._dynamo.reset()
            self.value, self.key = build(), key
        return self.value


LAST = _LastWorkload()

