import os

import pytest
import torch

from fastcells import _ext

requires_cpp = pytest.mark.skipif(
    not _ext.cpp_available(),
    reason="C++ extension not built (pip install --no-build-isolation -e .)")


@pytest.fixture(autouse=True, scope="session")
def _poison_kernel_outputs():
    """Kernel outputs start NaN-filled, so an element a kernel forgets to write fails."""
    if _ext.cpp_available():
        _ext.cpp_extension().set_poison_outputs(True)
    yield
    if _ext.cpp_available():
        _ext.cpp_extension().set_poison_outputs(False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(int(os.environ.get("FASTCELLS_TEST_SEED", "0")))
