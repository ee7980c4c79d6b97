import os

import torch

# Without a GPU the Triton kernels run in the interpreter, on CPU tensors. This must be set
# before triton is first imported (fastcells imports it lazily).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from fastcells import _ext  # noqa: E402

requires_cpp = pytest.mark.skipif(
    not _ext.cpp_available(),
    reason="C++ extension not built (pip install --no-build-isolation -e .)")


requires_triton = pytest.mark.skipif(not _ext.triton_available(),
                                     reason="triton not installed (pip install triton)")


@pytest.fixture(autouse=True, scope="session")
def _poison_kernel_outputs():
    """Kernel outputs start NaN-filled, so an element a kernel forgets to write fails."""
    if _ext.cpp_available():
        _ext.cpp_extension().set_poison_outputs(True)
    if _ext.cuda_available():
        _ext.cuda_extension().set_poison_outputs(True)
    yield
    if _ext.cpp_available():
        _ext.cpp_extension().set_poison_outputs(False)
    if _ext.cuda_available():
        _ext.cuda_extension().set_poison_outputs(False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(int(os.environ.get("FASTCELLS_TEST_SEED", "0")))
