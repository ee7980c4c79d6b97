"""Whole-sequence execution captured in CUDA graphs: no launch gaps between the many small
kernels of a recurrent rollout.

At the small batches of these models (1-4 sequences per GPU) a cell step is a handful of
kernels of a few microseconds each, and the GPU idles while Python launches the next one.
:func:`graph_sequence` captures a sequence module's whole forward and whole backward (every
step of every layer) once and then replays them as two graph launches per iteration.

    layer = fastcells.ConvLSTM(1, 64, num_layers=3, backend="triton").cuda()
    step = fastcells.cuda_graphs.graph_sequence(layer, torch.randn(4, 10, 1, 64, 64).cuda())
    out = step(frames)            # same as layer(frames)[0]; differentiable
    loss_fn(out, target).backward()

Restrictions (those of :func:`torch.cuda.make_graphed_callables`): the input shape, dtype
and device are fixed at capture; the sequence starts from the zero state (no ``state``
argument); parameters must not be replaced (in-place optimizer updates are fine); no CPU
synchronization inside the module (fastcells' cells have none). The graphed callable
returns the top layer's output sequence only.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class _OutputOnly(nn.Module):
    """``module(x)[0]``: graphs capture tensor outputs, and training needs the output."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)[0]


def graph_sequence(module: nn.Module, sample: Tensor, warmup: int = 3):
    """Captures ``module(x)[0]`` forward and backward for inputs shaped like ``sample``.

    Args:
        module: a fastcells sequence layer (or any module returning ``(output, ...)``) on a
            CUDA device.
        sample: an input of the shape, dtype and device every later call will use, e.g.
            (B, T, Cin, H, W) for ``batch_first`` layers. Its values are not kept.
        warmup: eager iterations run on a side stream before capture (cuDNN/Triton
            autotuning and allocations happen there, not in the graph).

    Returns:
        A callable ``f(x) -> output``; ``output.backward(...)`` replays the backward graph
        and accumulates into the module's ``.grad`` as usual.
    """
    if sample.device.type != "cuda":
        raise ValueError(f"sample: CUDA graphs need a CUDA tensor, got device {sample.device}")
    params = list(module.parameters())
    if any(p.device != sample.device for p in params):
        raise ValueError("module: every parameter must be on the sample's device "
                         f"({sample.device}) before capture")
    return torch.cuda.make_graphed_callables(_OutputOnly(module), (sample,),
                                             num_warmup_iters=warmup)
