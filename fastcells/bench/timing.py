"""Timing, peak memory, the machine's roofs, and the machine description.

Every table compares candidates *side by side*: after a warm-up, each repeat runs every
candidate once, in turn (round-robin), so slow phases of a shared machine hit all of them
alike and the ratios stay meaningful. On a GPU each call is timed with CUDA events after the
queue has drained; on a CPU with ``time.perf_counter``. Medians are reported, minima too
(noise only ever adds time).
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn`` (CUDA events on a GPU, after draining the queue)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_side_by_side(fns: dict[str, Callable[[], object]], repeats: int | None = None,
                      warmup: int = 2, device: torch.device | str = "cpu",
                      budget_s: float = 10.0, min_repeats: int = 3, max_repeats: int = 50
                      ) -> dict[str, dict[str, float]]:
    """Seconds per call of each fn, measured round-robin: ``{name: {median, min, n}}``.

    ``repeats=None`` picks the number of repeats from the warm-up's last call so that the
    measurement takes about ``budget_s`` seconds, clamped to [min_repeats, max_repeats].
    Warm-up: ``warmup`` calls of each fn, but only one for a fn whose call takes over 1 s.
    """
    device = torch.device(device)
    last = {}
    for k, fn in fns.items():
        for i in range(max(warmup, 1)):
            last[k] = measure_once(fn, device)
            if last[k] > 1.0:  # a call this long is warm after one run (saves minutes)
                break
    if repeats is None:
        per_round = max(sum(last.values()), 1e-9)
        repeats = int(min(max_repeats, max(min_repeats, budget_s / per_round)))
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            samples[k].append(measure_once(fn, device))
    return {k: {"median": statistics.median(v), "min": min(v), "n": len(v)}
            for k, v in samples.items()}


def peak_cuda_bytes(fn: Callable[[], object], device: torch.device) -> dict[str, int]:
    """``{"peak", "base"}``: the CUDA allocator's peak during one call of ``fn`` and what was
    allocated before it (so ``peak - base`` is what the call itself needed at its peak)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return {"peak": torch.cuda.max_memory_allocated(device), "base": base}


# ------------------------------------------------------------------------------ roofs
def measure_roofs(device: torch.device | str = "cpu", dtype=torch.float32,
                  quick: bool = False) -> dict[str, float]:
    """What this machine sustains, measured now (same load as the benchmarks):

    ``bandwidth``: bytes/s of ``b.copy_(a)`` (read + write) on buffers far larger than the
    caches; ``matmul``: flop/s of a large square matrix product (2 flops per multiply-add)
    in ``dtype``, the compute roof the convolutions are held against.
    """
    device = torch.device(device)
    cpu = device.type == "cpu"
    n = (8 if quick else 32) * 2**20 if cpu else 256 * 2**20  # elements
    budget = 0.3 if quick else 1.0

    def fastest(fn) -> float:
        return time_side_by_side({"f": fn}, None, 2, device, budget, max_repeats=20)["f"]["min"]

    src = torch.rand(n, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    copy_s = fastest(lambda: dst.copy_(src))
    src = dst = None  # free before the matmul's buffers
    m = (512 if quick else 1024) if cpu else 8192
    x = torch.rand(m, m, device=device, dtype=dtype)
    y = torch.rand(m, m, device=device, dtype=dtype)
    # float32 on a GPU: the convolutions held against this roof run on cuDNN (and the Triton
    # convolutions follow the same switch) with TF32 when torch.backends.cudnn.allow_tf32
    # (on by default), so the matmul roof is measured in the same mode; matmul's own TF32
    # switch (off by default) would give a roof several times lower, and floors above the
    # measured times.
    try:
        tf32 = (not cpu and dtype == torch.float32 and torch.backends.cudnn.allow_tf32)
        saved = torch.backends.cuda.matmul.allow_tf32
    except RuntimeError:  # set through the newer fp32_precision switches: left as they are
        tf32 = saved = None
    if saved is not None:
        torch.backends.cuda.matmul.allow_tf32 = tf32 or saved
    try:
        mm_s = fastest(lambda: x @ y)
    finally:
        if saved is not None:
            torch.backends.cuda.matmul.allow_tf32 = saved
    elem = torch.empty((), dtype=dtype).element_size()
    return {"bandwidth": 2 * n * elem / copy_s, "matmul": 2 * m**3 / mm_s,
            "tf32": bool(tf32) if tf32 is not None else None}


# ------------------------------------------------------------------------------ machine
def machine_info(device: torch.device | str = "cpu") -> dict:
    """CPU model, threads, GPU, library versions, date, load average, git commit and the
    environment variables that change the numbers (threads, allocator)."""
    device = torch.device(device)
    info = {
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "load_average": _load_average(),
        "commit": _git_commit(),
        # what else decides the numbers: thread counts and allocator settings
        "env": {k: v for k, v in sorted(os.environ.items())
                if k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LD_PRELOAD")
                or k.startswith("MALLOC_")},
    }
    try:
        import triton
        info["triton"] = triton.__version__
    except (ImportError, OSError, RuntimeError):  # not installed or broken: only reported
        info["triton"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = None
    return info


# How far the 1-minute load average may exceed the cores before a report calls its ratios
# untrustworthy. A benchmark running one thread per core reads as cores + a few hundredths
# (2.02-2.05 on the 2-core dev machine with nothing else running: the Python thread and
# kernel threads waking now and then); another job on the machine adds whole units.
LOAD_TOLERANCE = 0.1


def overloaded(load: float, cpu_count: int | None) -> bool:
    """Whether a 1-minute load average says other jobs shared the machine's cores."""
    cores = cpu_count or 1
    return load > cores * (1 + LOAD_TOLERANCE)


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                             check=False, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
