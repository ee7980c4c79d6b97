"""Input validation shared by the cells and layers: every error names the argument and the
shape it expected, and is raised before any kernel runs."""
from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import Tensor

Shape = Sequence  # entries: an int, or a letter (str) for a free dimension


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``: a TypeError for anything but an integer (a float,
    a string, a bool), a ValueError for a smaller one; both name the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {value!r} "
                        f"({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def check_odd_kernel(name: str, value) -> int:
    """A convolution kernel size: an odd int >= 1 ("same" padding k // 2)."""
    k = check_int(name, value)
    if k % 2 == 0:
        raise ValueError(f"{name}: expected an odd int >= 1 (\"same\" padding k // 2), got {k}")
    return k


def check_device(text) -> torch.device:
    """A device this machine has: ``cpu``, or ``cuda``/``cuda:N`` when CUDA is present."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device: expected cpu, cuda or cuda:N (mps on Apple), got {text!r}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device: {text!r} asked for, but MPS is not available here")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {text!r} asked for, but this torch has no CUDA device "
                             f"(use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device: {text!r} asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_tensor(x, name: str, shape: Shape, like: Tensor) -> None:
    """Checks type, floating dtype, rank, fixed sizes, dtype and device against ``like``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor of shape {_fmt(shape)}, "
                        f"got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != len(shape) or any(isinstance(want, int) and got != want
                                    for got, want in zip(x.shape, shape)):
        raise ValueError(f"{name}: expected shape {_fmt(shape)}, got {tuple(x.shape)}")
    # inside an autocast region the cells cast their inputs to the parameters' dtype
    if x.dtype != like.dtype and not torch.is_autocast_enabled(like.device.type):
        raise TypeError(f"{name}: dtype {x.dtype} differs from the parameters' {like.dtype} "
                        f"(convert the module or the input with .to())")
    if x.device != like.device:
        raise ValueError(f"{name}: device {x.device} differs from the parameters' {like.device}")


def check_nonempty(x: Tensor, name: str, shape: Shape) -> None:
    """Every size >= 1 (an empty batch or frame would reach the kernels as a no-op)."""
    if x.numel() == 0:
        raise ValueError(f"{name}: expected shape {_fmt(shape)} with every size >= 1, got "
                         f"{tuple(x.shape)}")


def frame_shape(channels: int, spatial: tuple[int, int] | None, batch="B") -> tuple:
    h, w = spatial if spatial is not None else ("H", "W")
    return (batch, channels, h, w)


def check_state(state, names: Sequence[str], shape: Shape, like: Tensor) -> tuple:
    """``state`` must be a tuple/list of len(names) tensors, each of ``shape``."""
    if not isinstance(state, (tuple, list)) or len(state) != len(names):
        got = type(state).__name__
        if isinstance(state, (tuple, list)):
            got += f" of length {len(state)}"
        raise ValueError(f"state: expected a tuple ({', '.join(names)}) of tensors each of "
                         f"shape {_fmt(shape)}, got {got}")
    for t, n in zip(state, names):
        check_tensor(t, f"state[{names.index(n)}] ({n})", shape, like)
    return tuple(state)


def zeros_state(n: int, shape: Sequence[int], like: Tensor) -> tuple:
    z = torch.zeros(tuple(shape), dtype=like.dtype, device=like.device)
    return (z,) * n
