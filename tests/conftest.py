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
    poison = []
    if _ext.cpp_available():
        poison.append(_ext.cpp_extension().set_poison_outputs)
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
