"""The Conv-TT-LSTM CTT recurrence (CELLS.md section 4), reference and Triton.

With order N, steps M, rank R, kernel K and lags D = M - N + 1, the history holds the last
M hidden states, logical index 0 the oldest. Window l is the D states l .. l+D-1, and

    v_0 = P_0 * win_0 + b_P0
    v_l = P_l * win_l + b_Pl + G_{l-1} * v_{l-1} + b_G(l-1)      l = 1 .. N-1

("same" padding). Both functions return v_{N-1}.

The history is a ring: ``history`` lists the M slots in *storage* order and ``head`` is
the slot of the oldest state, so logical state i is ``history[(head + i) % M]``; a caller
that keeps its states in a ring (:class:`fastcells.cells.convttlstm.RingHistory`) passes
its slots as they are, without reordering them into a new list per step.

Shapes: history M tensors (B, C, H, W); p_weights N tensors (R, C, K, K, D) (NVlabs'
Conv3d layout, window element d on the last axis); p_biases N tensors (R,) or None;
g_weights N - 1 tensors (R, R, K, K); g_biases N - 1 tensors (R,) or None. Returns
(B, R, H, W).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _triton


def _logical(history: Sequence[Tensor], head: int) -> list:
    m = len(history)
    return [history[(head + i) % m] for i in range(m)]


def _check(history, p_weights, g_weights) -> None:
    m, n = len(history), len(p_weights)
    if n < 1 or m < n or len(g_weights) != n - 1:
        raise ValueError(f"need order N = len(p_weights) >= 1, M = len(history) >= N and N - 1 "
                         f"g_weights, got M={m}, N={n}, {len(g_weights)} g_weights")
    if p_weights[0].dim() != 5 or p_weights[0].shape[-1] != m - n + 1:
        raise ValueError(f"p_weights: expected (R, C, K, K, D) with D = M - N + 1 = {m - n + 1},"
                         f" got {tuple(p_weights[0].shape)}")
    k = p_weights[0].shape[-2]
    if k % 2 == 0 or p_weights[0].shape[-3] != k:
        raise ValueError(f"p_weights: expected an odd square kernel, got "
                         f"{tuple(p_weights[0].shape[2:4])}")


def ctt_chain_ref(history: Sequence[Tensor], p_weights: Sequence[Tensor],
                  p_biases: Optional[Sequence[Optional[Tensor]]],
                  g_weights: Sequence[Tensor], g_biases: Optional[Sequence[Optional[Tensor]]],
                  head: int = 0) -> Tensor:
    """Eager reference: each window concatenated on channels, one ``conv2d`` per window
    and per factor (as the cell's reference backend, and NVlabs' optimized code)."""
    _check(history, p_weights, g_weights)
    hist = _logical(history, head)
    n = len(p_weights)
    d = len(hist) - n + 1
    v = None
    for level in range(n):
        w = p_weights[level]  # (R, C, K, K, D) -> (R, D*C, K, K), window element d-major
        w2 = w.permute(0, 4, 1, 2, 3).reshape(w.shape[0], -1, *w.shape[2:4])
        pad = w.shape[2] // 2
        pb = p_biases[level] if p_biases is not None else None
        pre = F.conv2d(torch.cat(hist[level:level + d], dim=1), w2, pb, padding=pad)
        if v is None:
            v = pre
        else:
            gb = g_biases[level - 1] if g_biases is not None else None
            v = pre + F.conv2d(v, g_weights[level - 1], gb, padding=pad)
    return v


# ----------------------------------------------------------------------------- Triton
# The forward saves v_0 .. v_{N-2} (R channels each) for the G weight gradients; it returns
# them as extra, non-differentiable outputs so that the torch.library op's setup_context can
# save them (an op's intermediates are only reachable through its outputs).
_FORWARD_SCHEMA = ("(Tensor[] history, int head, Tensor[] p_weights, Tensor[] p_biases, "
                   "Tensor[] g_weights, Tensor[] g_biases) -> Tensor[]")
_BACKWARD_SCHEMA = ("(Tensor grad, Tensor[] history, int head, Tensor[] vs, Tensor[] p_weights, "
                    "Tensor[] g_weights, bool p_bias, bool g_bias, bool[] need_history, "
                    "bool need_weights) -> (Tensor[], Tensor[], Tensor[], Tensor[], Tensor[])")

_forward_op = _triton.library_op("ctt_chain_triton", _FORWARD_SCHEMA, "ctt", "forward")
_backward_op = _triton.library_op("ctt_chain_triton_backward", _BACKWARD_SCHEMA, "ctt",
                                  "backward")
_forward_eager = _triton.eager("ctt", "forward")
_backward_eager = _triton.eager("ctt", "backward")


def _save(ctx, history, head, p_weights, g_weights, p_bias: bool, g_bias: bool, vs) -> None:
    ctx.mark_non_differentiable(*vs[:-1])
    ctx.set_materialize_grads(False)
    ctx.layout = (len(history), len(p_weights), head, p_bias, g_bias)
    ctx.save_for_backward(*history, *vs[:-1], *p_weights, *g_weights)


def _gradients(ctx, grad, needs, kernel):
    """``(d_history, d_p_weights, d_p_biases, d_g_weights, d_g_biases)``: lists like the
    inputs, with None where ``needs`` (flags in the same five lists) asks for no gradient
    or none reached v_{N-1}. The kernels compute the weight gradients of a level together
    (one launch), so they run when any weight or bias needs a gradient."""
    m, n, head, p_bias, g_bias = ctx.layout
    saved = ctx.saved_tensors
    history, vs = saved[:m], saved[m:m + n - 1]
    p_weights, g_weights = saved[m + n - 1:m + 2 * n - 1], saved[m + 2 * n - 1:]
    need_history, need_weights = list(needs[0]), any(any(flags) for flags in needs[1:])
    if grad is None or not (any(need_history) or need_weights):
        return tuple([None] * len(flags) for flags in needs)
    out = kernel(grad, list(history), head, list(vs), list(p_weights), list(g_weights),
                 p_bias, g_bias, need_history, need_weights)
    # The kernels return empty tensors for what was not asked (ops cannot return None).
    return tuple([g if need else None for g, need in zip(grads, flags)]
                 for grads, flags in zip(out, needs))


# torch.library op (torch.compile traces it; GPU: triton_op with its kernels visible)
def _op_setup_context(ctx, inputs, output):
    history, head, p_weights, p_biases, g_weights, g_biases = inputs
    _save(ctx, history, head, p_weights, g_weights, len(p_biases) > 0, len(g_biases) > 0,
          output)


def _op_backward(ctx, grads):
    need = ctx.needs_input_grad  # a list of flags per list input
    dh, dpw, dpb, dgw, dgb = _gradients(ctx, grads[-1], (need[0], *need[2:]), _backward_op)
    return dh, None, dpw, dpb, dgw, dgb


_forward_op.register_autograd(_op_backward, setup_context=_op_setup_context)


# Eager path: a plain autograd.Function (a fraction of the custom-op dispatch cost per
# call, as :func:`fastcells.ops._common.autograd_pair`). autograd_pair itself passes the
# same arguments to both paths, which cannot work here: the op takes lists (M and N vary)
# while an autograd.Function only tracks tensors passed as top-level arguments.
class CTTChainTriton(torch.autograd.Function):
    """``apply(head, counts, *tensors)`` with ``counts = (M, N, p_bias, g_bias)`` and
    ``tensors`` = history (M), p_weights (N), p_biases (N or 0), g_weights (N - 1),
    g_biases (N - 1 or 0). Returns ``(v_0, ..., v_{N-1})``; only v_{N-1} is
    differentiable."""

    @staticmethod
    def forward(ctx, head, counts, *tensors):
        history, p_weights, p_biases, g_weights, g_biases = _split(tensors, counts)
        vs = _forward_eager(history, head, p_weights, p_biases, g_weights, g_biases)
        _save(ctx, history, head, p_weights, g_weights, bool(p_biases), bool(g_biases), vs)
        return tuple(vs)

    @staticmethod
    def backward(ctx, *grads):
        m, n, _, p_bias, g_bias = ctx.layout
        needs = _split(ctx.needs_input_grad[2:], (m, n, p_bias, g_bias))
        grads = _gradients(ctx, grads[-1], needs, _backward_eager)
        return (None, None, *[g for group in grads for g in group])


def _split(tensors, counts):
    m, n, p_bias, g_bias = counts
    sizes = (m, n, n if p_bias else 0, n - 1, n - 1 if g_bias else 0)
    out, i = [], 0
    for size in sizes:
        out.append(list(tensors[i:i + size]))
        i += size
    return out


def _biases(biases, count: int, name: str) -> list:
    if biases is None or all(b is None for b in biases):
        return []
    if any(b is None for b in biases) or len(biases) != count:
        raise ValueError(f"{name}: expected {count} tensors or None, got {len(biases)} with "
                         f"{sum(b is None for b in biases)} None")
    return list(biases)


def ctt_chain_triton(history: Sequence[Tensor], p_weights: Sequence[Tensor],
                     p_biases: Optional[Sequence[Optional[Tensor]]],
                     g_weights: Sequence[Tensor],
                     g_biases: Optional[Sequence[Optional[Tensor]]],
                     head: int = 0) -> Tensor:
    """Triton kernels, one fused multi-source convolution per level (see
    ``fastcells/kernels/ctt.py``); same contract as :func:`ctt_chain_ref`. All tensors
    share a dtype (float16, bfloat16, float32 or float64) and device; the history may be in
    any strides (contiguous, channels_last, slices), read in place."""
    _check(history, p_weights, g_weights)
    n = len(p_weights)
    history, p_weights, g_weights = list(history), list(p_weights), list(g_weights)
    pb, gb = _biases(p_biases, n, "p_biases"), _biases(g_biases, n - 1, "g_biases")
    first = history[0]
    for t in (*history, *p_weights, *pb, *g_weights, *gb):
        if t.dtype != first.dtype or t.device != first.device:
            raise TypeError(f"ctt_chain_triton: every tensor must be {first.dtype} on "
                            f"{first.device} like history[0], got {t.dtype} on {t.device}")
    head = int(head) % len(history)
    if torch.compiler.is_compiling():
        return _forward_op(history, head, p_weights, pb, g_weights, gb)[-1]
    counts = (len(history), n, bool(pb), bool(gb))
    return CTTChainTriton.apply(head, counts, *history, *p_weights, *pb, *g_weights, *gb)[-1]
