"""Weight gradients of several steps of a sequence in one Winograd call, on the fused CPU
backend.

A recurrent cell runs the same convolution (one weight, one shape) at every step, so its
backward computes one weight gradient per step, each a call with its own per-thread sums,
output transform and thread start-up. Where the weight pass runs our Winograd kernel
(``winograd``/``winograd8``, :mod:`fastcells.ops.conv`), a step's backward instead keeps its
(input, output gradient) pair; when :func:`set_weight_grad_steps` pairs of one convolution
are kept, one call of the summed kernel (``conv_weight_grad_winograd_sum``) computes their
gradient, and that step returns it (the others return none: the total is the same sum).
Pairs still kept at the end of the backward pass are computed by a callback the engine runs
there and sent into the same weights with ``torch.autograd.backward``.

Measured (2-core EPYC, 2 threads; benchmarks/results/cpu_weight_grad_steps.md and
benchmarks/NOTES.md "Sequence weight gradients"): for the pass alone, ten steps in one call
against ten calls 1.01-1.22x at B=4, 64x64 and 1.31x at OpenSTL's B=16, 256 -> 512 on
16x16; for a training iteration with ``steps=4`` 0.98-1.04x at B=4 (within the machine's
noise) and 1.10x at B=16, while the kept pairs peaked at 35-42% of the bytes autograd saves
for backward. That is why the default is 1 (off).

It applies only where it gives the same gradients; elsewhere the step computes its own:

- the step's weight pass runs ``winograd``/``winograd8`` (its cached choice);
- ``backward()`` accumulating into ``.grad``: every weight of the step reaches its leaf
  through view nodes only (a parameter, or a slice of one), and the engine will run that
  leaf's accumulation in this pass. ``torch.autograd.grad`` (gradients returned, not
  accumulated), ``backward(inputs=...)`` leaving a weight out, and weights computed from
  parameters (weight norm) are left alone;
- :func:`get_weight_grad_steps` > 1.

Costs: each kept pair holds its output gradient (and, for a summed convolution, the inputs'
channel concatenation) until its group is computed: at most ``steps`` pairs per
convolution. Where the number of steps is not a multiple of ``steps``, a weight's gradient
reaches its parameter in two parts (the complete groups' with the rest of the pass, the
last group's at its end), so a hook on the parameter runs twice, each time with a part.
A backward pass that raises leaves its kept pairs in memory. For a fixed setting and thread
count results are deterministic; they differ from per-step gradients in the last bits
(another summation order).
"""
from __future__ import annotations

import os
import threading
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .. import _ext

ENV_VAR = "FASTCELLS_WEIGHT_GRAD_STEPS"
DEFAULT_STEPS = 1  # off: the measured gain does not pay for the memory (module docstring)
# Nodes a gradient passes through unchanged in value, only placed (a view of a parameter):
# the summed gradient of several steps can be sent through any one step's copy of them.
_VIEW_NODES = frozenset({"AliasBackward0", "SliceBackward0", "ViewBackward0",
                         "UnsafeViewBackward0", "AsStridedBackward0", "SelectBackward0"})
_ACCUMULATE = "torch::autograd::AccumulateGrad"


def _parse(value, source: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            value = None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{source}: expected a whole number of steps >= 1 (1: every step "
                         f"computes its own weight gradient), got {value!r}")
    return value


def _from_env() -> int:
    spec = os.environ.get(ENV_VAR, "").strip()
    return _parse(spec, f"environment variable {ENV_VAR}") if spec else DEFAULT_STEPS


_steps = _from_env()
_lock = threading.Lock()
# graph task id -> {group key: _Group}: the pairs kept in each running backward pass.
_pending: dict[int, dict[tuple, "_Group"]] = {}
# How many summed calls ran and over how many pairs (tests check the grouping), and the
# most bytes of kept pairs (inputs and output gradients) held at once.
stats = {"calls": 0, "pairs": 0, "peak_kept_bytes": 0}
_kept_bytes = [0]


def set_weight_grad_steps(steps: int) -> None:
    """How many steps' weight gradients of one convolution the fused CPU backend computes in
    one Winograd call (module docstring); 1 switches it off (every step computes its own).
    The environment variable ``FASTCELLS_WEIGHT_GRAD_STEPS`` gives the initial value."""
    global _steps
    _steps = _parse(steps, "steps")


def get_weight_grad_steps() -> int:
    """The current setting of :func:`set_weight_grad_steps`."""
    return _steps


class _Group:
    """The kept pairs of one convolution in one backward pass, and how to turn their summed
    gradient into the weights' gradients (``finish``) and where to send it (``weights``)."""

    __slots__ = ("xs", "dzs", "weights", "finish", "kernel", "pad", "points")

    def __init__(self, weights, finish, kernel, pad, points):
        self.xs, self.dzs = [], []
        self.weights, self.finish = weights, finish
        self.kernel, self.pad, self.points = kernel, pad, points

    def compute(self) -> list:
        g = _ext.cpp_extension().conv_weight_grad_winograd_sum(
            self.xs, self.dzs, self.kernel, self.pad, 0, self.points)
        with _lock:
            stats["calls"] += 1
            stats["pairs"] += len(self.xs)
            _kept_bytes[0] -= sum(map(_nbytes, self.xs + self.dzs))
        self.xs, self.dzs = [], []
        return self.finish(g)


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _leaf(node) -> Optional[object]:
    """The AccumulateGrad node ``node`` reaches through view nodes only, where the engine runs
    all of them in the current pass; else None."""
    try:
        while node is not None:
            if not torch._C._will_engine_execute_node(node):
                return None
            name = node.name()
            if name == _ACCUMULATE:
                return node
            nxt = [f for f, _ in node.next_functions if f is not None]
            if name not in _VIEW_NODES or len(nxt) != 1:
                return None
            node = nxt[0]
    except RuntimeError:
        # torch.autograd.grad() does not accumulate into leaves (it says so for leaf nodes)
        return None
    return None


def _flush(task: int) -> None:
    with _lock:
        groups = _pending.pop(task, {})
    for group in groups.values():
        if not group.xs:
            continue
        sent = [(w, g) for w, g in zip(group.weights, group.compute()) if g is not None]
        torch.autograd.backward([w for w, _ in sent], [g for _, g in sent])


def keep(ctx, edges: Sequence[int], weights: Sequence[Tensor], route, x: Tensor, dz: Tensor,
         kernel: int, pad: int, points: int,
         finish: Callable[[Tensor], list]) -> Optional[list]:
    """Called by a step's backward whose weight pass runs Winograd on ``points`` points, with
    the weight gradient's input ``x`` and output gradient ``dz``; ``weights`` are the step's
    weight inputs (backward inputs ``edges`` of ``ctx``), ``finish`` maps the (summed)
    gradient of the convolution's weight to theirs, and ``route`` is what else ``finish``
    depends on (hashable). Returns None where the step must compute its own gradient
    (module docstring), else the gradients to return for ``weights``: None each while the
    pair is kept, the group's sum when this step completes a group."""
    steps = _steps
    if steps <= 1:
        return None
    leaves = []
    for e in edges:
        leaf = _leaf(ctx.next_functions[e][0])
        if leaf is None:
            return None
        leaves.append(leaf)
    task = torch._C._current_graph_task_id()
    key = (kernel, pad, points, route, tuple(x.shape), tuple(dz.shape), x.dtype,
           tuple((leaf, w.storage_offset(), tuple(w.shape), w.stride())
                 for leaf, w in zip(leaves, weights)))
    with _lock:
        groups = _pending.get(task)
        if groups is None:
            groups = _pending[task] = {}
            torch.autograd.Variable._execution_engine.queue_callback(lambda: _flush(task))
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(list(weights), finish, kernel, pad, points)
        group.xs.append(x)
        group.dzs.append(dz)
        _kept_bytes[0] += _nbytes(x) + _nbytes(dz)
        stats["peak_kept_bytes"] = max(stats["peak_kept_bytes"], _kept_bytes[0])
        full = len(group.xs) >= steps
        if full:
            del groups[key]
    if full:
        return group.compute()
    return [None] * len(weights)


__all__ = ["ENV_VAR", "get_weight_grad_steps", "keep", "set_weight_grad_steps"]
