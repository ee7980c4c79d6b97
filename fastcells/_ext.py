"""Loading of the compiled CPU extension ``fastcells._C``.

The extension is optional at import time: the package (and the reference backend) work
without it. Code that needs it calls :func:`cpp_extension`, which raises an ImportError
saying how to build it.
"""
from __future__ import annotations

import importlib

BUILD_HINT = (
    "The fastcells C++ extension (fastcells._C) is not built. Build it from the repository "
    "root, after installing torch, with:\n"
    "    pip install --no-build-isolation -e .\n"
    "(needs a C++17 compiler and ninja; `make setup` does both steps). "
    "Use backend='reference' to run without it."
)

_module = None
_error: Exception | None = None
_loaded = False


def _load() -> None:
    global _module, _error, _loaded
    if _loaded:
        return
    _loaded = True
    try:
        _module = importlib.import_module("fastcells._C")
    except ImportError as exc:  # not built, or built against another torch
        _error = exc


def cpp_available() -> bool:
    """True when the compiled CPU extension can be used."""
    _load()
    return _module is not None


def cpp_extension():
    """The compiled extension module; ImportError with build instructions if missing."""
    _load()
    if _module is None:
        raise ImportError(f"{BUILD_HINT}\n(import error: {_error})")
    return _module
