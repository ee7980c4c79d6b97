"""pytest-benchmark: one whole cell step (convolutions + gates), forward and fwd + bwd.

    pytest benchmarks/test_steps.py --benchmark-group-by=group

Variants: the eager reference, torch.compile of it, every fused backend available here and
``auto``'s backend with ``memory_efficient=True``. ``extra_info`` records the bytes autograd
saves for backward for the step and for a 2-layer stack over 6 frames (and the CUDA peak on
a GPU), so every cell's saved-for-backward bytes are in the saved JSON
(``--benchmark-json``). ``test_saved_bytes`` gathers them per cell without timing.
"""
import pytest
import torch
from conftest import LAST, SIZE_NAMES, device_dtypes, rounds_for, timed, variants_for

from fastcells.bench import floors, timing, workloads


def _cases():
    for device, dtype in device_dtypes():
        for size in SIZE_NAMES:
            for cell in workloads.CELLS:
                for variant in variants_for("step", cell, device, dtype):
                    for mode in workloads.MODES:
                        yield pytest.param(device, dtype, size, cell, variant, mode,
                                           id=f"{device}-{workloads.dtype_name(dtype)}-{size}-"
                                              f"{cell}-{variant}-{mode}")


@pytest.mark.parametrize("device, dtype, size, cell, variant, mode", list(_cases()))
def test_step(benchmark, device, dtype, size, cell, variant, mode):
    shape = workloads.SIZES[size]
    work = LAST.get(("step", device, dtype, size, cell, variant), lambda: workloads.step_workload(
        cell, variant, shape, device, dtype))
    benchmark.group = f"step {cell} {size} {device} {workloads.dtype_name(dtype)} {mode}"
    benchmark.extra_info.update(variant=variant, shape=str(shape),
                                conv_flops=floors.step_flops(cell, shape)[mode])
    if mode == "fwd+bwd":
        benchmark.extra_info["saved_bytes"] = work.saved_bytes()
        if torch.device(device).type == "cuda":
            peak = timing.peak_cuda_bytes(work.fn(mode), torch.device(device))
            benchmark.extra_info["peak_bytes_above_inputs"] = peak["peak"] - peak["base"]
    benchmark.pedantic(timed(work.fn(mode), device), rounds=rounds_for(size, "step"),
                       warmup_rounds=1)


def _memory_cases():
    for device, dtype in device_dtypes():
        for size in SIZE_NAMES:
            for cell in workloads.CELLS:
                yield pytest.param(device, dtype, size, cell,
                                   id=f"{device}-{workloads.dtype_name(dtype)}-{size}-{cell}")


@pytest.mark.parametrize("device, dtype, size, cell", list(_memory_cases()))
def test_saved_bytes(benchmark, device, dtype, size, cell):
    """Not a timing: saved-for-backward bytes of every non-compiled variant in extra_info."""
    shape = workloads.SIZES[size]
    benchmark.group = "saved bytes"
    variants = [v for v in variants_for("step", cell, device, dtype) if v != "compiled"]
    for v in variants:
        step = workloads.step_workload(cell, v, shape, device, dtype).saved_bytes()
        stack = workloads.stack_saved_bytes(cell, v, shape, device, dtype)
        benchmark.extra_info[f"{v} step"] = step
        benchmark.extra_info[f"{v} 2x6 stack"] = stack
    ref = benchmark.extra_info["reference 2x6 stack"]
    for v in variants[1:]:
        benchmark.extra_info[f"{v} / reference (stack)"] = benchmark.extra_info[f"{v} 2x6 stack"] / ref
    benchmark.pedantic(lambda: None, rounds=1)
