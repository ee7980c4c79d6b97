"""pytest-benchmark suite of the CPU backends at the paper's small setting.

    pytest benchmarks --benchmark-group-by=param:cell

Timing lives here, never in tests/. Groups compare, per cell: the gate math alone and a
full cell step (convolutions + gates), forward + backward, for the reference and the fused
C++ backend (and its memory-efficient mode). The ratios the issue targets are printed by
``python -m fastcells.bench``, which measures the same workloads side by side.
"""
import pytest

from fastcells.bench import (CELLS, Size, gate_workload, sequence_workload, stack_saved_bytes,
                             step_workload)

SIZE = Size(batch=4, channels=32, height=64, width=64)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_gates_fwd_bwd(benchmark, cell, backend):
    benchmark.group = f"gates {cell}"
    benchmark.pedantic(gate_workload(cell, backend, SIZE), rounds=15, warmup_rounds=2)


@pytest.mark.parametrize("variant", ["reference", "cpp", "cpp_memeff"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_step_fwd_bwd(benchmark, cell, variant):
    benchmark.group = f"step {cell}"
    backend = "reference" if variant == "reference" else "cpp"
    fn = step_workload(cell, backend, SIZE, memory_efficient=variant == "cpp_memeff")
    benchmark.pedantic(fn, rounds=7, warmup_rounds=1)


@pytest.mark.parametrize("variant", ["reference", "cpp", "cpp_memeff"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_sequence_fwd_bwd(benchmark, cell, variant):
    """A 2-layer stack over 6 frames, forward + backward."""
    benchmark.group = f"sequence {cell}"
    backend = "reference" if variant == "reference" else "cpp"
    fn = sequence_workload(cell, backend, SIZE, memory_efficient=variant == "cpp_memeff")
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("cell", list(CELLS))
def test_saved_bytes(benchmark, cell):
    """Not a timing: records saved-for-backward bytes (2 layers x 6 steps) in extra_info."""
    benchmark.group = "saved bytes"
    counts = {name: stack_saved_bytes(cell, b, SIZE, me) for name, b, me in
              [("reference", "reference", False), ("cpp", "cpp", False),
               ("cpp_memeff", "cpp", True)]}
    benchmark.extra_info.update(counts)
    benchmark.extra_info["cpp/reference"] = counts["cpp"] / counts["reference"]
    benchmark.extra_info["memeff/reference"] = counts["cpp_memeff"] / counts["reference"]
    benchmark.pedantic(lambda: None, rounds=1)
