"""Helpers of the CUDA C++ gate ops (``*_cuda`` in each op module; kernels in csrc/cuda/).

The CUDA kernels address every (B, C, H, W) tensor through (batch, channel, position)
strides, so contiguous, channels_last and channel-sliced tensors are read and written in
place; only layouts whose H and W do not collapse into one dimension are copied.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext


def extension():
    """The compiled CUDA extension (ImportError with build instructions when missing). The
    tests replace it with a host emulation of the same kernels to run them without a GPU."""
    return _ext.cuda_extension()


def strided(t: Tensor) -> Tensor:
    """``t`` itself when its H and W collapse into one strided dimension, else a contiguous
    copy. Kept in sync with ``plane_stride`` in csrc/cuda/ops.h."""
    _, _, h, w = t.shape
    if h == 1 or w == 1 or t.stride(2) == w * t.stride(3):
        return t
    return t.contiguous()


def channels_last(t: Tensor) -> bool:
    """The memory format of an op's outputs, from its main input: channels_last when the
    channels are innermost. The real kernels and the fake ones both follow this."""
    return t.stride(1) < t.stride(3)


def new_output(like: Tensor, channels: int, channels_last: bool) -> Tensor:
    """Fake-tensor result matching what csrc/cuda/ops.h allocates."""
    b, _, h, w = like.shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((b, channels, h, w), dtype=like.dtype, device=like.device,
                       memory_format=fmt)


def optional(t: Tensor | None) -> Tensor | None:
    return strided(t) if t is not None else None
