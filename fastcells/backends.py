"""Backend names, availability and the ``backend="auto"`` rule.

Every cell computes the same function (CELLS.md) with one of these backends:

=============  ====================  =========================  ==============================
backend        device                dtypes                     what runs
=============  ====================  =========================  ==============================
``reference``  any                   any floating dtype         eager PyTorch, the truth
``cpp``        CPU                   float32, float64           fused C++ gate kernels (csrc/)
``triton``     CUDA (CPU when        float16, bfloat16,         fused Triton kernels
               ``TRITON_INTERPRET``  float32, float64           (kernels/), torch.compile-able
               is 1)
``cuda``       CUDA                  float16, bfloat16,         fused CUDA C++ gate kernels
                                     float32, float64           (csrc/cuda/)
=============  ====================  =========================  ==============================

``auto`` picks, for the parameters' device and dtype, the first available backend of the
cell's preference list (:data:`AUTO_PREFERENCE`); the resolved choice is ``cell.backend``.
On CPU that is ``cpp`` for float32/float64 when the extension is built, else ``reference``
(warning once when the extension is missing). On CUDA the list is per cell; see
:data:`AUTO_PREFERENCE` for how it was chosen. Triton in interpreter mode is never chosen
by ``auto`` (it is a test vehicle, far slower than the reference).
An explicitly requested backend never falls back: it raises, saying how to get it.
"""
from __future__ import annotations

import warnings

import torch

from . import _ext

BACKENDS = ("reference", "cpp", "triton", "cuda")
_CPP_DTYPES = (torch.float32, torch.float64)
_GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# backend="auto" on CUDA tensors: the first available backend of the cell's list.
# The gate kernels of both GPU backends read and write each tensor once, so they tie on
# bandwidth; the CUDA C++ extension launches with less host overhead than a Triton kernel
# (no Python-side argument binding), which decides at the small batches of these models.
# Conv-TT-LSTM prefers Triton because only Triton has the fused CTT recurrence kernel.
# Not yet measured on a GPU (no GPU was available while this was written):
# benchmarks/gpu_suite.py times every backend per cell and prints the rule it measures.
AUTO_PREFERENCE = {
    "convlstm": ("cuda", "triton"),
    "stlstm": ("cuda", "triton"),
    "mklstm": ("cuda", "triton"),
    "convttlstm": ("triton", "cuda"),
    "mim": ("cuda", "triton"),
    "causal_lstm": ("cuda", "triton"),  # PredRNN++: like ST-LSTM, elementwise stages only
    "ghu": ("cuda", "triton"),
}
_warned_missing_cpp = False


def validate_backend(name: str) -> str:
    """Checks a requested backend name; raises for an explicit backend that is unavailable."""
    if name == "auto":
        return name
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {name!r}")
    if name == "cpp":
        _ext.cpp_extension()  # ImportError with the build command
    if name == "triton":
        reason = _ext.triton_unavailable_reason()
        if reason:
            raise ImportError(reason)
    if name == "cuda":
        _ext.cuda_extension()
    return name


def supports(backend: str, device: torch.device, dtype: torch.dtype) -> bool:
    if backend == "reference":
        return True
    if backend == "cpp":
        return device.type == "cpu" and dtype in _CPP_DTYPES and _ext.cpp_available()
    if backend == "triton":
        on_device = device.type == "cuda" or (device.type == "cpu" and _ext.triton_interpreted())
        return on_device and dtype in _GPU_DTYPES and _ext.triton_available()
    if backend == "cuda":
        return device.type == "cuda" and dtype in _GPU_DTYPES and _ext.cuda_available()
    return False


def resolve(requested: str, device: torch.device, dtype: torch.dtype,
            cell: str = "convlstm") -> str:
    """The backend that runs for parameters on ``device`` with ``dtype`` in ``cell``."""
    global _warned_missing_cpp
    if requested != "auto":
        return requested
    if device.type == "cuda":
        for backend in AUTO_PREFERENCE[cell]:
            if supports(backend, device, dtype):
                return backend
        return "reference"
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
                "use backend='auto' (a GPU backend) or 'reference' on this device"
            )
        raise TypeError(
            f"backend 'cpp' supports float32 and float64, got {dtype}; "
            "use backend='reference' for other dtypes"
        )
    if backend in ("triton", "cuda"):
        if dtype not in _GPU_DTYPES:
            raise TypeError(f"backend {backend!r} supports float16, bfloat16, float32 and "
                            f"float64, got {dtype}")
        if backend == "triton" and device.type == "cpu":
            raise ValueError(
                "backend 'triton' runs on CUDA tensors, got a CPU tensor; use backend='auto' "
                "(the C++ backend) on CPU. Only for testing: TRITON_INTERPRET=1 runs the "
                "Triton kernels on CPU tensors, slowly.")
        if device.type != "cuda":
            raise ValueError(f"backend {backend!r} runs on CUDA tensors, got device {device}")
    raise ValueError(f"backend {backend!r} cannot run on {device} with {dtype}")


def available_backends(device: str | torch.device = "cpu") -> list[str]:
    """Backends usable for float32 tensors on ``device``."""
    device = torch.device(device)
    return [b for b in BACKENDS if supports(b, device, torch.float32)]
