"""Loading of the compiled CPU extension ``fastcells._C``.

The extension is optional: the package (and the reference backend) work without it. Code
that needs it calls :func:`cpp_extension`, which raises an ImportError saying how to build it.

Both compiled extensions are looked for when this module is imported (under a millisecond),
not on a cell's first step: that step may be the one ``torch.compile`` traces, and dynamo
cannot trace an import (``Unsupported: ... import_module`` with ``fullgraph=True``).
"""
from __future__ import annotations

import importlib
import os

import torch

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


# ----------------------------------------------------------------------------- CUDA extension
CUDA_BUILD_HINT = (
    "The fastcells CUDA extension (fastcells._C_cuda) is not built. It is built by setup.py "
    "when torch has CUDA and nvcc is found (or with FASTCELLS_CUDA=1):\n"
    "    pip install --no-build-isolation -e .\n"
    "Use backend='triton' (pip install triton) or backend='reference' on the GPU without it."
)

_cuda_module = None
_cuda_error: Exception | None = None
_cuda_loaded = False


def _load_cuda() -> None:
    global _cuda_module, _cuda_error, _cuda_loaded
    if _cuda_loaded:
        return
    _cuda_loaded = True
    try:
        _cuda_module = importlib.import_module("fastcells._C_cuda")
    except ImportError as exc:  # not built (CPU-only torch, no nvcc), or another torch
        _cuda_error = exc


def cuda_available() -> bool:
    """True when the compiled CUDA extension can be used (and a GPU is present)."""
    _load_cuda()
    return _cuda_module is not None


def cuda_extension():
    """The compiled CUDA extension; ImportError with build instructions if missing."""
    _load_cuda()
    if _cuda_module is None:
        raise ImportError(f"{CUDA_BUILD_HINT}\n(import error: {_cuda_error})")
    return _cuda_module


# Looked for now, before any tracing (see the module docstring).
_load()
_load_cuda()


# ----------------------------------------------------------------------------- Triton
# The Triton releases fastcells is tested with (CI runs 3.6 and the newest; pyproject's
# `triton` extra says the same). Older ones lack what the kernels use (tl.dot's out_dtype
# with a float64 accumulator, the knobs the sm_90 compile test reads).
TRITON_MIN = (3, 6)
TRITON_REQUIREMENT = "triton>=3.6,<3.10"
TRITON_HINT = (f"backend 'triton' needs the triton package: pip install '{TRITON_REQUIREMENT}' "
               "(GPU wheels of torch ship it)")


def _version_tuple(text: str) -> tuple:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _module_version(name: str) -> str | None:
    """``name.__version__``, or None when the module cannot be imported."""
    try:
        return importlib.import_module(name).__version__
    except ImportError:
        return None


_REASONS: dict = {}


def triton_unavailable_reason() -> str | None:
    """Why backend 'triton' cannot run here, with what to do; None when it can. Asked on
    every cell step, so worked out once per interpreter setting (versions do not change
    within a process; the key holds the version lookup so that tests can replace it)."""
    key = (triton_interpreted(), _module_version)
    if key not in _REASONS:
        _REASONS[key] = _triton_problem()
    return _REASONS[key]


def _triton_problem() -> str | None:
    triton = _module_version("triton")
    if triton is None:
        return TRITON_HINT
    if _version_tuple(triton)[:2] < TRITON_MIN:
        return (f"triton {triton} is older than the oldest release fastcells supports: "
                f"pip install '{TRITON_REQUIREMENT}'")
    if triton_interpreted() and _version_tuple(triton)[:2] < (3, 7):
        numpy = _module_version("numpy") or "0"
        if _version_tuple(numpy)[:2] >= (2, 4):
            # triton < 3.7's interpreter converts 1-element arrays with int(), which numpy
            # 2.4 refuses ("only 0-dimensional arrays can be converted to Python scalars")
            # in every kernel with a loop over a runtime bound. Compiled GPU code is fine.
            return (f"the interpreter of triton {triton} (TRITON_INTERPRET=1) fails with "
                    f"numpy >= 2.4 (numpy {numpy} is installed): pip install 'numpy<2.4', "
                    f"or triton >= 3.7")
    return None


@torch.compiler.assume_constant_result
def triton_available() -> bool:
    """True when backend 'triton' can run here (:func:`triton_unavailable_reason`).

    A constant to ``torch.compile`` (it runs this while tracing, once, rather than tracing
    the imports inside): the cells ask it on every step."""
    return triton_unavailable_reason() is None


def triton_interpreted() -> bool:
    """True when Triton runs in interpreter mode (``TRITON_INTERPRET=1``): its kernels then
    take CPU tensors. That is how the test suite runs them on machines without a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
