"""pytest-benchmark suite of the CPU backends at the paper's small setting.

    pytest benchmarks --benchmark-group-by=param:cell

Timing lives here, never in tests/. Groups compare, per cell: the gate math alone, a full
cell step (convolutions + gates) and a 2-layer sequence, forward + backward, for the
reference and the fused C++ backend (and its memory-efficient mode). The ratios the issue
targets are printed by ``python -m fastcells.bench``, which measures the same workloads side
by side.
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


# step: one cell step (convolutions + gates) from a random state;
# sequence: a 2-layer stack over 6 frames (the frames need no gradient, as in training).
WORKLOADS = {"step": (step_workload, 7), "sequence": (sequence_workload, 3)}


@pytest.mark.parametrize("variant", ["reference", "cpp", "cpp_memeff"])
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("kind", list(WORKLOADS))
def test_fwd_bwd(benchmark, kind, cell, variant):
    benchmark.group = f"{kind} {cell}"
    workload, rounds = WORKLOADS[kind]
    backend = "reference" if variant == "reference" else "cpp"
    fn = workload(cell, backend, SIZE, memory_efficient=variant == "cpp_memeff")
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1)


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
