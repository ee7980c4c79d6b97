import os

import torch

# The Triton kernels are tested in the interpreter, on CPU tensors (how CI runs them, with no
# GPU). This must be set before triton is first imported (fastcells imports it lazily).
# FASTCELLS_GPU_TESTS=1 leaves it unset, for tests/test_gpu.py on a GPU machine
# (benchmarks/gpu_suite.py runs that).
GPU_TESTS = os.environ.get("FASTCELLS_GPU_TESTS", "0") == "1"
if not GPU_TESTS:
    os.environ.setdefault("TRITON_INTERPRET", "1")

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
