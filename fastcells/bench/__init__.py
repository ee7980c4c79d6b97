"""Benchmarks of the fused kernels against eager PyTorch and ``torch.compile``.

    python -m fastcells.bench --quick                  # ~1 minute: everything, tiny sizes
    python -m fastcells.bench all --out benchmarks/results
    python -m fastcells.bench kernels --help | train --help | readme --help

Modules: :mod:`.workloads` (what is timed: gate math and cell steps per variant),
:mod:`.timing` (side-by-side medians, CUDA events, peak memory, roofs, machine info),
:mod:`.floors` (byte/FLOP floors), :mod:`.kernels` (kernel tables), :mod:`.training`
(training-cost tables in the MS-LSTM paper's format), :mod:`.targets` (the issues'
targets), :mod:`.readme` (README's results block), :mod:`.cli`. The pytest-benchmark
suites in ``benchmarks/`` time the same workloads.
"""
from .cli import main
from .timing import machine_info, measure_once, time_side_by_side
from .workloads import (
                        CELLS,
                        QUICK_SIZE,
                        SIZES,
                        Size,
                        gate_workload,
                        stack_saved_bytes,
                        step_workload,
)

__all__ = ["CELLS", "QUICK_SIZE", "SIZES", "Size", "gate_workload", "machine_info", "main",
           "measure_once", "stack_saved_bytes", "step_workload", "time_side_by_side"]
