import pytest

from fastcells import _ext


def pytest_collection_modifyitems(config, items):
    if not _ext.cpp_available():
        skip = pytest.mark.skip(reason="C++ extension not built: " + _ext.BUILD_HINT)
        for item in items:
            item.add_marker(skip)
