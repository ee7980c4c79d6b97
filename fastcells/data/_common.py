"""Helpers shared by the loaders: path checks and conversion of stored frames to float32."""
from __future__ import annotations

import os

import numpy as np
import torch


def check_file(path, extensions: tuple[str, ...], what: str) -> str:
    """Returns ``path`` as a str after checking it exists and ends with one of ``extensions``."""
    path = os.fspath(path)
    if not any(path.lower().endswith(ext) for ext in extensions):
        raise ValueError(f"{what}: {path!r} should end with one of {', '.join(extensions)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no such file {path!r}")
    return path


def unit_scale(dtype: np.dtype, scale: float | None, where: str) -> float:
    """The factor that maps stored values to [0, 1]: 1/255 for uint8, 1/65535 for uint16, 1
    for floats (taken as already in [0, 1]); an explicit ``scale`` overrides."""
    if scale is not None:
        return float(scale)
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 1.0 / 255.0
    if dtype == np.uint16:
        return 1.0 / 65535.0
    if dtype.kind == "f":
        return 1.0
    if dtype == np.bool_:
        return 1.0
    raise ValueError(f"{where}: frames of dtype {dtype} have no default scale to [0, 1]; "
                     f"store uint8/uint16/float frames or pass scale=")


def to_tensor(frames: np.ndarray, scale: float) -> torch.Tensor:
    """(T, C, H, W) array -> contiguous float32 tensor times ``scale``."""
    # always a copy: the source may be a read-only memory map of the file
    out = torch.from_numpy(np.array(frames, dtype=np.float32, order="C"))
    if scale != 1.0:
        out = out * scale
    return out


def check_seq_len(seq_len: int | None, available: int, where: str) -> int:
    """The number of frames each item has: ``seq_len`` (cropping longer sequences) or all."""
    if seq_len is None:
        return available
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        raise ValueError(f"seq_len: expected a positive int or None, got {seq_len!r}")
    if seq_len > available:
        raise ValueError(f"{where}: sequences have {available} frames, fewer than "
                         f"seq_len={seq_len}")
    return seq_len
