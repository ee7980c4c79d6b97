"""Helpers shared by the fused-op wrappers."""
from __future__ import annotations

import torch
from torch import Tensor


def planar(t: Tensor) -> Tensor:
    """``t`` with contiguous (H, W) planes and channel stride H*W, copying only if needed.

    The C++ kernels accept any batch stride, so channel slices of a contiguous tensor (the c
    and m halves of ST-LSTM's [c; m] buffer) pass without a copy; channels_last and other
    layouts are made contiguous.
    """
    _, c, h, w = t.shape
    if ((w == 1 or t.stride(3) == 1) and (h == 1 or t.stride(2) == w)
            and (c == 1 or t.stride(1) == h * w)):
        return t  # the strides of size-1 dims never matter (kept in sync with planes.h)
    return t.clone(memory_format=torch.contiguous_format)


def grad_or_zeros(grad: Tensor | None, like: Tensor, channels: int | None = None) -> Tensor:
    """The gradient of an output, or zeros when autograd passes None (the output did not
    reach the loss). The zeros have ``like``'s shape, or ``channels`` channels when given.
    The layout is left to each backend's kernel wrapper: the C++ kernels want planar
    tensors (their wrappers call :func:`planar`), the GPU kernels read any strides, so a
    channels_last gradient reaches them without a copy."""
    if grad is None:
        b, c, h, w = like.shape
        return like.new_zeros((b, channels or c, h, w))
    return grad


def new_planes(like: Tensor, channels: int) -> Tensor:
    """Fake-tensor result matching what the kernels allocate (contiguous NCHW)."""
    b, _, h, w = like.shape
    return like.new_empty((b, channels, h, w))  # new_empty is always contiguous


def autograd_pair(name: str, forward, forward_kernel_op, backward_impl, backward_op,
                  setup_context, backward):
    """One autograd formula, two ways to run it.

    ``backward(ctx, *grads, kernel=...)`` is registered on the torch.library op (with the
    backward *op* as kernel) so ``torch.compile`` traces forward and backward; eager calls
    go through a plain ``autograd.Function`` with the same ``setup_context`` and
    ``backward`` (and the backward's raw implementation), which costs a fraction of the
    custom-op dispatch per call: it matters at the small sizes of patch-reshaped models.
    Returns ``apply(*args)`` choosing the path.
    """
    forward_kernel_op.register_autograd(
        lambda ctx, *grads: backward(ctx, *grads, kernel=backward_op),
        setup_context=setup_context)
    function = type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(lambda ctx, *grads: backward(ctx, *grads,
                                                               kernel=backward_impl)),
    })

    def apply(*args):
        if torch.compiler.is_compiling():
            return forward_kernel_op(*args)
        return function.apply(*args)

    return apply
