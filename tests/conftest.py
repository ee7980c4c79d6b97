import json
import os

import torch

# The Triton kernels are tested in the interpreter, on CPU tensors (how CI runs them, with no
# GPU). This must be set before triton is first imported (fastcells imports it lazily).
# FASTCELLS_GPU_TESTS=1 leaves it unset, for tests/test_gpu.py on a GPU machine
# (benchmarks/gpu_suite.py runs that).
GPU_TESTS = os.environ.get("FASTCELLS_GPU_TESTS", "0") == "1"
if not GPU_TESTS:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The C++ backend's convolutions (fastcells/ops/conv.py) run a forced, deterministic choice
# in the test suite: NNPACK for forward and data gradient where it passes its check against
# oneDNN (oneDNN where not), the matmul weight gradient. Autotuning ("auto", the library's
# default) would time every new shape and pick by load; tests/test_conv_autotune.py tests it,
# with the cells. Set FASTCELLS_CONV_ALGO=auto (or anything else) to run the suite so.
os.environ.setdefault("FASTCELLS_CONV_ALGO", "forward=nnpack,input=nnpack,weight=matmul")

import pytest  # noqa: E402

from fastcells import _ext  # noqa: E402

requires_cpp = pytest.mark.skipif(
    not _ext.cpp_available(),
    reason="C++ extension not built (pip install --no-build-isolation -e .)")


requires_triton = pytest.mark.skipif(
    not (_ext.triton_available() and _ext.triton_interpreted()),
    reason="triton not installed (pip install triton), or FASTCELLS_GPU_TESTS=1 (these tests "
           "run Triton on CPU tensors in the interpreter; tests/test_gpu.py covers the GPU)")



@pytest.fixture(autouse=True, scope="session")
def _poison_kernel_outputs():
    """Kernel outputs start NaN-filled, so an element a kernel forgets to write fails."""
    poison = []
    if _ext.cpp_available():
        poison.append(_ext.cpp_extension().set_poison_outputs)
    if _ext.cuda_available():
        poison.append(_ext.cuda_extension().set_poison_outputs)
    if _ext.triton_available():
        from fastcells.kernels import layout

        poison.append(lambda on: layout.POISON.__setitem__(0, on))
    for switch in poison:
        switch(True)
    yield
    for switch in poison:
        switch(False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(int(os.environ.get("FASTCELLS_TEST_SEED", "0")))


@pytest.fixture(autouse=True)
def _poisoning_still_on():
    """Every test starts with kernel outputs NaN-filled: a test that switched poisoning off
    and did not restore it would make every later test weaker, depending on test order."""
    if _ext.triton_available():
        from fastcells.kernels import layout

        assert layout.POISON[0], "an earlier test left Triton output poisoning off"
    yield


# ------------------------------------------------------------- sharding and records
# benchmarks/gpu_suite.py runs the GPU tests as several pytest processes at once (Triton
# compiles on the CPU, one kernel at a time per process) and must keep what a run killed
# at its deadline had already found:
#   FASTCELLS_TEST_SHARD=i/n     run every n-th test from the i-th (collection order)
#   FASTCELLS_TEST_RECORDS=PATH  append one JSON line per test outcome to PATH, as it ends
def pytest_collection_modifyitems(config, items):
    shard = os.environ.get("FASTCELLS_TEST_SHARD")
    if not shard:
        return
    try:
        index, count = (int(v) for v in shard.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise pytest.UsageError(f"FASTCELLS_TEST_SHARD must be i/n with 0 <= i < n, "
                                f"got {shard!r}")
    config.hook.pytest_deselected(items=[t for i, t in enumerate(items) if i % count != index])
    items[:] = [t for i, t in enumerate(items) if i % count == index]


def pytest_runtest_logreport(report):
    path = os.environ.get("FASTCELLS_TEST_RECORDS")
    if not path:
        return
    # one line per test: its call outcome, or a setup/teardown that failed or skipped
    if report.when != "call" and report.outcome == "passed":
        return
    message = ""
    if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
        message = str(report.longrepr[2])
    elif report.outcome == "failed":
        message = report.longreprtext.strip().splitlines()[-1][:500] if report.longreprtext \
            else ""
    record = {"kind": "test", "nodeid": report.nodeid, "when": report.when,
              "outcome": report.outcome, "seconds": round(report.duration, 3),
              "message": message}
    with open(path, "a") as f:  # one write per line: concurrent shards do not interleave
        f.write(json.dumps(record) + "\n")
