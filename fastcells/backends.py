"""Backend names, availability and the ``backend="auto"`` rule.

Every cell computes the same function (CELLS.md) with one of these backends:

==============  ========  ===========================  ==================================
backend         device    dtypes                       what runs
==============  ========  ===========================  ==================================
``reference``   any       any floating dtype           eager PyTorch, the truth
``cpp``         CPU       float32, float64             fused C++ gate kernels (csrc/)
==============  ========  ===========================  ==================================

``auto`` picks the fastest backend that supports the parameters' device and dtype:
``cpp`` on CPU for float32/float64 when the extension is built, else ``reference``
(warning once when the extension is missing). The resolved choice is ``cell.backend``.
An explicitly requested backend never falls back: it raises, saying how to get it.
"""
from __future__ import annotations

import warnings

import torch

from . import _ext

BACKENDS = ("reference", "cpp")
_CPP_DTYPES = (torch.float32, torch.float64)
_warned_missing_cpp = False


def validate_backend(name: str) -> str:
    """Checks a requested backend name; raises for an explicit backend that is unavailable."""
    if name == "auto":
        return name
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {name!r}")
    if name == "cpp":
        _ext.cpp_extension()  # ImportError with the build command
    return name


def supports(backend: str, device: torch.device, dtype: torch.dtype) -> bool:
    if backend == "reference":
        return True
    if backend == "cpp":
        return device.type == "cpu" and dtype in _CPP_DTYPES and _ext.cpp_available()
    return False


def resolve(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend that runs for parameters on ``device`` with ``dtype``."""
    global _warned_missing_cpp
    if requested != "auto":
        return requested
    if device.type == "cpu" and dtype in _CPP_DTYPES:
        if _ext.cpp_available():
            return "cpp"
        if not _warned_missing_cpp:
            _warned_missing_cpp = True
            warnings.warn(
                "fastcells: backend='auto' uses the slow 'reference' backend because the C++ "
                "extension is missing.\n" + _ext.BUILD_HINT,
                RuntimeWarning,
                stacklevel=3,
            )
    return "reference"


def check_supported(backend: str, device: torch.device, dtype: torch.dtype) -> None:
    """Raises a clear error when an explicitly chosen backend cannot run these tensors."""
    if supports(backend, device, dtype):
        return
    if backend == "cpp":
        if device.type != "cpu":
            raise ValueError(
                f"backend 'cpp' runs on CPU tensors, got device {device}; "
                "use backend='reference' (or 'auto') on this device"
            )
        raise TypeError(
            f"backend 'cpp' supports float32 and float64, got {dtype}; "
            "use backend='reference' for other dtypes"
        )
    raise ValueError(f"backend {backend!r} cannot run on {device} with {dtype}")


def available_backends(device: str | torch.device = "cpu") -> list[str]:
    """Backends usable for float32 tensors on ``device``."""
    device = torch.device(device)
    return [b for b in BACKENDS if supports(b, device, torch.float32)]
