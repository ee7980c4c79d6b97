"""Memory-efficient execution of a cell step (``memory_efficient=True``).

The step runs without autograd; only its inputs are saved. Backward recomputes the
convolutions (the gate pre-activations) from them and differentiates through the same
step, so no pre-activation or gate activation is kept between forward and backward.
Unlike ``torch.utils.checkpoint``, the inputs go through ``save_for_backward``, so
``saved_tensors_hooks`` (and memory accounting built on them) see exactly what is kept.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.utils.checkpoint


class RecomputeStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: Callable, n_inputs: int, names: Sequence[str], *tensors):
        ctx.run, ctx.n_inputs, ctx.names = run, n_inputs, names
        # an output nothing reads gets None, not zeros: the weights that only reach such
        # outputs then get no gradient (None), as in the default mode, instead of zeros
        # (which weight decay and momentum would act on)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*tensors)
        outs = run(tensors[:n_inputs], dict(zip(names, tensors[n_inputs:])))
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        leaves = [t.detach().requires_grad_(need) if t is not None else None
                  for t, need in zip(saved, needs)]
        with torch.enable_grad():
            outs = ctx.run(leaves[:ctx.n_inputs], dict(zip(ctx.names, leaves[ctx.n_inputs:])))
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        wrt = [t for t, need in zip(leaves, needs) if need]
        got = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs],
                                       allow_unused=True) if pairs and wrt else [None] * len(wrt))
        return (None, None, None, *[next(got) if need else None for need in needs])


def recompute_step(run: Callable, inputs: Sequence, params: dict) -> tuple:
    """``run(inputs, params)`` with memory-efficient backward; returns its output tuple.

    Under ``torch.compile`` (which cannot trace ``torch.autograd.grad`` inside a backward)
    the same recomputation is expressed with non-reentrant ``torch.utils.checkpoint``,
    which the compiler turns into a recompute region of its graph.
    """
    if torch.compiler.is_compiling():
        return tuple(torch.utils.checkpoint.checkpoint(
            lambda *ts: run(ts, params), *inputs, use_reentrant=False))
    names = tuple(params)
    return RecomputeStep.apply(run, len(inputs), names, *inputs, *params.values())
