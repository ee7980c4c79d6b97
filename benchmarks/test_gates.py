"""pytest-benchmark: the gate math of each cell alone, forward and forward + backward.

    pytest benchmarks/test_gates.py --benchmark-group-by=group

Per cell, size, device and dtype, a group holds the eager reference, torch.compile of it and
every fused backend available here. The same workloads, side by side with floors, are in
``python -m fastcells.bench kernels``.
"""
import pytest
from conftest import LAST, SIZE_NAMES, device_dtypes, rounds_for, timed, variants_for

from fastcells.bench import floors, workloads


def _cases():
    for device, dtype in device_dtypes():
        for size in SIZE_NAMES:
            for cell in workloads.CELLS:
                for variant in variants_for("gates", cell, device, dtype):
                    for mode in workloads.MODES:  # innermost: fwd and fwd+bwd share a build
                        yield pytest.param(device, dtype, size, cell, variant, mode,
                                           id=f"{device}-{workloads.dtype_name(dtype)}-{size}-"
                                              f"{cell}-{variant}-{mode}")


@pytest.mark.parametrize("device, dtype, size, cell, variant, mode", list(_cases()))
def test_gates(benchmark, device, dtype, size, cell, variant, mode):
    shape = workloads.SIZES[size]
    work = LAST.get(("gates", device, dtype, size, cell, variant), lambda: workloads.gate_workload(
        cell, variant, shape, device, dtype))
    benchmark.group = f"gates {cell} {size} {device} {workloads.dtype_name(dtype)} {mode}"
    benchmark.extra_info.update(
        variant=variant, shape=str(shape), bytes_moved=floors.gate_bytes(cell, shape, dtype)[mode])
    if mode == "fwd+bwd":
        benchmark.extra_info["saved_bytes"] = work.saved_bytes()
    benchmark.pedantic(timed(work.fn(mode), device), rounds=rounds_for(size, "gates"),
                       warmup_rounds=1)
