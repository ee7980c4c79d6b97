"""A sum of convolutions of several inputs at one output, as one convolution of their channel
concatenation, on the fused CPU backend:

    y = conv2d_sum([x1, x2, ...], [w1, w2, ...], bias, padding)
      = conv2d(x1, w1) + conv2d(x2, w2) + ... + bias
      = conv2d([x1; x2; ...], [w1, w2, ...], bias)              (channels concatenated)

Shapes: each xi (B, Ci, H, W) with one B, H, W; each wi (Cout, Ci, kh, kw) with one Cout and
kernel; bias (Cout,) or None. :func:`conv2d_sum_ref` is the sum of ``F.conv2d`` calls.
``rows`` (optional, one entry per input) selects and orders a weight's output rows: entry
``r`` of ``rows[i]`` is row ``r`` of ``wi``, or a zero row where it is -1, so cells whose
gates sum parts of differently laid-out convolutions (ST-LSTM) use their parameters as they
are, and nothing weight-sized is kept per step.

Why: a recurrent cell's gates are ``Wx * x + Wh * h``. In the Winograd algorithms
(:mod:`fastcells.ops.conv`) each convolution transforms its inputs, multiplies, and
transforms its Cout outputs back, and for the cells' 4C-wide gate convolutions that output
transform is the larger part. One convolution over ``[x; h]`` does it once instead of twice,
and its product has a K of Cx + Ch instead of two of Cx and Ch. Measured (2-core EPYC, B=4,
32 + 32 -> 128 channels, 64x64, kernel 5, ``winograd8``): forward 30.9 -> 17.1 ms, data
gradient 29.5 -> 17.2, weight gradient 28.1 -> 18.0; oneDNN gains 0-10%
(benchmarks/NOTES.md "Summed convolutions").

Unlike ``conv2d(torch.cat([x, h]), ...)`` under autograd, nothing concatenated is kept for
backward: the inputs are (the cell keeps them anyway) and the weight gradient concatenates
them again. Each pass runs the algorithm :mod:`fastcells.ops.conv` chooses for the
concatenated convolution's shapes (the same cache). The data gradient is computed only for
the inputs that need one, the weight gradient only for the weights that do. Where every
needed pass of the concatenated convolution runs oneDNN, or the dispatcher is off
(``set_conv_algorithm("onednn")``, another device or dtype, a ``torch.compile`` trace), the
convolutions run one by one through :func:`fastcells.ops.conv.conv2d` and are added.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import conv as _conv


def _rows_tensor(rows) -> Tensor:
    return torch.as_tensor(rows, dtype=torch.long)


def select_rows(w: Tensor, rows) -> Tensor:
    """``w``'s output rows in the order of ``rows`` (None: ``w`` itself), -1 a zero row."""
    if rows is None:
        return w
    idx = _rows_tensor(rows)
    out = w.new_zeros((len(idx), *w.shape[1:]))
    keep = idx >= 0
    out[keep] = w[idx[keep]]
    return out


def _scatter_rows(g: Tensor, shape, rows) -> Tensor:
    """The gradient of :func:`select_rows`: ``g``'s rows back at their places in ``w``."""
    if rows is None:
        return g
    idx = _rows_tensor(rows)
    keep = idx >= 0
    return g.new_zeros(shape).index_copy_(0, idx[keep], g[keep])


def conv2d_sum_ref(xs: Sequence[Tensor], weights: Sequence[Tensor],
                   bias: Optional[Tensor] = None, padding=0, rows=None) -> Tensor:
    """Eager reference: ``F.conv2d(x1, w1', bias) + F.conv2d(x2, w2') + ...`` with
    ``wi' = select_rows(wi, rows[i])``."""
    rows = rows or [None] * len(xs)
    y = F.conv2d(xs[0], select_rows(weights[0], rows[0]), bias, padding=padding)
    for x, w, r in zip(xs[1:], weights[1:], rows[1:]):
        y = y + F.conv2d(x, select_rows(w, r), padding=padding)
    return y


def _check_rows(rows, weights) -> list:
    if rows is None:
        return [None] * len(weights)
    if not isinstance(rows, (list, tuple)) or len(rows) != len(weights):
        raise ValueError(f"rows: expected None or one entry per weight ({len(weights)}), "
                         f"got {rows!r}")
    out = []
    for i, (r, w) in enumerate(zip(rows, weights)):
        if r is None:
            out.append(None)
            continue
        r = tuple(r)
        used = [j for j in r if j != -1]
        if (not all(isinstance(j, int) for j in r) or any(j < -1 or j >= w.shape[0] for j in r)
                or len(set(used)) != len(used)):
            raise ValueError(f"rows[{i}]: expected distinct rows of weights[{i}] (0 to "
                             f"{w.shape[0] - 1}) or -1 for a zero row, got {r}")
        out.append(r)
    return out


def _effective_shape(w: Tensor, rows) -> tuple:
    return tuple(w.shape) if rows is None else (len(rows), *w.shape[1:])


def _check_lists(xs, weights) -> None:
    if not isinstance(xs, (list, tuple)) or not isinstance(weights, (list, tuple)):
        raise TypeError(f"xs and weights: expected lists of tensors, got "
                        f"{type(xs).__name__} and {type(weights).__name__}")
    if not xs or len(xs) != len(weights):
        raise ValueError(f"xs and weights: expected one weight per input (at least one), got "
                         f"{len(xs)} inputs and {len(weights)} weights")
    for name, seq in (("xs", xs), ("weights", weights)):
        for i, t in enumerate(seq):
            if not isinstance(t, Tensor) or t.dim() != 4:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{name}[{i}]: expected a 4-d tensor, got {got}")


def _validate(xs, weights, bias, pad, rows) -> None:
    shapes = [_effective_shape(w, r) for w, r in zip(weights, rows)]
    x0, w0 = xs[0], _shape_only(weights[0], shapes[0])
    for i, (x, w) in enumerate(zip(xs, weights)):
        w = _shape_only(w, shapes[i])  # the selected rows' shape
        _conv._validate(x, w, bias, pad)
        if x.shape[0] != x0.shape[0] or x.shape[2:] != x0.shape[2:]:
            raise ValueError(f"xs[{i}]: expected (B, Ci, H, W) = ({x0.shape[0]}, Ci, "
                             f"{x0.shape[2]}, {x0.shape[3]}) like xs[0], got {tuple(x.shape)}")
        if w.shape[0] != w0.shape[0] or w.shape[2:] != w0.shape[2:]:
            raise ValueError(f"weights[{i}]: expected ({w0.shape[0]}, Ci, {w0.shape[2]}, "
                             f"{w0.shape[3]}) like weights[0], got {tuple(w.shape)}")
        if x.dtype != x0.dtype or x.device != x0.device:
            raise TypeError(f"xs[{i}]: expected {x0.dtype} on {x0.device} like xs[0], got "
                            f"{x.dtype} on {x.device}")


def _key(x_shape, w_shape, pad, like: Tensor) -> _conv.ConvKey:
    # The concatenation is made contiguous (whatever the inputs' layout), so that is its key.
    return _conv._key(x_shape, w_shape, pad, like.dtype, "contiguous")


def _shape_only(like: Tensor, shape) -> Tensor:
    """A tensor of ``shape`` (one stored element) for the checks that read only shapes."""
    return like.new_empty((1,)).expand(shape)


def _cat(tensors) -> Tensor:
    return torch.cat(tensors, 1).contiguous()


def _stacked_shapes(xs, w_shapes, chosen) -> tuple[tuple, tuple]:
    c = sum(xs[i].shape[1] for i in chosen)
    x0, w0 = xs[0], w_shapes[0]
    return (x0.shape[0], c, *x0.shape[2:]), (w0[0], c, *w0[2:])


class _Conv2dSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pad, n, rows, bias, *args):
        xs, weights = args[:n], args[n:]
        ctx.pad, ctx.n, ctx.rows, ctx.has_bias = pad, n, rows, bias is not None
        ctx.save_for_backward(*xs, *weights)  # the selected rows are made again in backward
        x = _cat(xs)
        w = _cat([select_rows(w, r) for w, r in zip(weights, rows)])
        out_hw = (x.shape[2] + 2 * pad[0] - w.shape[2] + 1,
                  x.shape[3] + 2 * pad[1] - w.shape[3] + 1)
        key = _key(x.shape, w.shape, pad, x)
        return _conv._dispatch("forward", key, (x, w, bias, pad), x, w, pad, out_hw)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        n, pad, rows = ctx.n, ctx.pad, ctx.rows
        saved = ctx.saved_tensors
        xs, weights = saved[:n], saved[n:]
        w_shapes = [_effective_shape(w, r) for w, r in zip(weights, rows)]
        need_x = [i for i in range(n) if ctx.needs_input_grad[4 + i]]
        need_w = [i for i in range(n) if ctx.needs_input_grad[4 + n + i]]
        out_hw = grad.shape[2:]
        gxs, gws = [None] * n, [None] * n
        if need_x:
            w = _cat([select_rows(weights[i], rows[i]) for i in need_x])
            x_shape, _ = _stacked_shapes(xs, w_shapes, need_x)
            key = _key(x_shape, w.shape, pad, w)
            gx = _conv._dispatch("input", key, (torch.Size(x_shape), w, grad, pad),
                                 _shape_only(w, x_shape), w, pad, out_hw)
            for i, part in zip(need_x, gx.split([xs[i].shape[1] for i in need_x], 1)):
                gxs[i] = part
        if need_w:
            x = _cat([xs[i] for i in need_w])
            _, w_shape = _stacked_shapes(xs, w_shapes, need_w)
            key = _key(x.shape, w_shape, pad, x)
            widths = [xs[i].shape[1] for i in need_w]
            parts = [(weights[i].shape, rows[i]) for i in need_w]

            def finish(gw):  # the concatenation's weight gradient -> each weight's
                return [_scatter_rows(part, shape, r)
                        for part, (shape, r) in zip(gw.split(widths, 1), parts)]

            # ctx's edges are its tensor inputs only: [bias,] *xs, *weights
            got = _conv._weight_pass(ctx, [int(ctx.has_bias) + n + i for i in need_w],
                                     [weights[i] for i in need_w], (tuple(widths), tuple(parts)),
                                     key, (x, torch.Size(w_shape), grad, pad),
                                     _shape_only(x, w_shape), out_hw, finish)
            for i, g in zip(need_w, got):
                gws[i] = g
        gb = grad.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return (None, None, None, gb, *gxs, *gws)


def _separate(xs, weights, bias, pad, rows) -> Tensor:
    y = _conv.conv2d(xs[0], select_rows(weights[0], rows[0]), bias, pad)
    for x, w, r in zip(xs[1:], weights[1:], rows[1:]):
        y = y.add_(_conv.conv2d(x, select_rows(w, r), None, pad))
    return y


def _stacks(xs, weights, pad, rows) -> bool:
    x0 = xs[0]
    w_shapes = [_effective_shape(w, r) for w, r in zip(weights, rows)]
    if len(xs) == 1 or _conv._dispatcher_off(x0):
        return False
    grad = torch.is_grad_enabled()
    need_x = [i for i, x in enumerate(xs) if grad and x.requires_grad]
    need_w = [i for i, w in enumerate(weights) if grad and w.requires_grad]
    keys = [("forward", _key(*_stacked_shapes(xs, w_shapes, range(len(xs))), pad, x0))]
    if need_x:
        keys.append(("input", _key(*_stacked_shapes(xs, w_shapes, need_x), pad, x0)))
    if need_w:
        keys.append(("weight", _key(*_stacked_shapes(xs, w_shapes, need_w), pad, x0)))
    return not all(_conv._runs_onednn(p, k) for p, k in keys)


def stacks(xs: Sequence[Tensor], weights: Sequence[Tensor], padding=0, rows=None) -> bool:
    """Whether :func:`conv2d_sum` of these arguments runs as one convolution of the
    concatenation: False where the dispatcher is off or every pass this call needs is known
    (cached) to run oneDNN; True otherwise, including before the first timing."""
    return _stacks(xs, weights, _conv._padding(padding), _check_rows(rows, weights))


def conv2d_sum(xs: Sequence[Tensor], weights: Sequence[Tensor], bias: Optional[Tensor] = None,
               padding=0, rows=None) -> Tensor:
    """``conv2d(xs[0], weights[0], bias) + conv2d(xs[1], weights[1]) + ...`` (stride 1), run
    as one convolution of the inputs' channel concatenation (module docstring), each pass by
    the algorithm :func:`fastcells.set_conv_algorithm` selects for that convolution.

    Shapes: xs[i] (B, Ci, H, W), weights[i] (Cout, Ci, kh, kw) (or any number of rows,
    ``rows[i]`` picking Cout of them), bias (Cout,) or None; returns
    (B, Cout, H + 2 ph - kh + 1, W + 2 pw - kw + 1)."""
    pad = _conv._padding(padding)
    _check_lists(xs, weights)
    rows = _check_rows(rows, weights)
    _validate(xs, weights, bias, pad, rows)
    if not _stacks(xs, weights, pad, rows):
        return _separate(xs, weights, bias, pad, rows)
    return _Conv2dSum.apply(pad, len(xs), tuple(rows), bias, *xs, *weights)


__all__ = ["conv2d_sum", "conv2d_sum_ref", "select_rows", "stacks"]
