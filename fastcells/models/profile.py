"""Parameters, FLOPs and peak memory of a model, counted the way the papers count them.

FLOPs convention (fvcore's, the one the MS-LSTM paper's tables match): one multiply-add is
one flop; convolutions and matrix products are counted (the bias add is not), pointwise
ops (activations, gate products, additions) are not; batch norm, layer norm and bilinear
upsampling count fvcore's few flops per element; ``scaled_dot_product_attention`` counts
as its two matrix products. The count covers the whole forward: for a recurrent model the
full rollout of ``T_in + pred_len - 1`` steps, embedding and head included. A model with a
``flop_target(input_shape, pred_len) -> (module, inputs)`` method (a diffusion model, whose
forward repeats one network evaluation per sampling step) is counted on that instead: for
VDT, one denoising step. Report it for batch 1, as the papers do.

The fused backends run their gate math as ``torch.library`` custom ops, which fvcore
cannot see inside and does not count; their convolutions are the same as the reference
backend's. So :func:`profile` counts on a copy of the model switched to the ``reference``
backend (all backends compute the same function with the same convolutions). fvcore
traces with ``torch.jit.trace``, which runs the model once (batch 1: seconds on a CPU for
the largest presets).
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..cells.base import CellBase


class _Rollout(nn.Module):
    """Wraps ``model(frames, pred_len)`` as a one-tensor-input module for tracing."""

    def __init__(self, model: nn.Module, pred_len: int):
        super().__init__()
        self.model, self.pred_len = model, pred_len

    def forward(self, frames):
        return self.model(frames, pred_len=self.pred_len)


def reference_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every cell on the reference backend."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, CellBase):
            m.requested_backend = "reference"
    return ref


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or not (as the papers' tables count them)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape, pred_len: int | None = None) -> int:
    """fvcore FLOPs (multiply-adds) of ``model(torch.zeros(input_shape), pred_len)``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore scripts functions at import (deprecated)
            from fvcore.nn import FlopCountAnalysis
    except ImportError as e:  # an optional dependency: only FLOP counting needs it
        raise ImportError("count_flops/profile need fvcore: pip install fvcore "
                          "(or pip install fastcells[models])") from e

    input_shape = _check_shape(input_shape)
    pred_len = getattr(model, "pred_len", 1) if pred_len is None else pred_len
    ref = reference_copy(model).eval()
    if hasattr(ref, "flop_target"):
        # a model whose forward is a loop of network evaluations (a diffusion sampler) names
        # the one evaluation its FLOPs are reported for
        module, inputs = ref.flop_target(input_shape, pred_len)
    else:
        param = next(ref.parameters())
        frames = torch.zeros(input_shape, dtype=param.dtype, device=param.device)
        module, inputs = _Rollout(ref, pred_len), (frames,)
    analysis = FlopCountAnalysis(module, inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flops)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with warnings.catch_warnings(), torch.no_grad():
        # tracing warns about Python-level shape checks and torch.jit's deprecation
        warnings.simplefilter("ignore")
        return int(analysis.total())


def _sdpa_flops(inputs, outputs) -> int:
    """F.scaled_dot_product_attention as the two matrix products it replaces, q k^T and
    weights @ v: (B..., Lq, E) x (B..., Lk, E) and (B..., Lq, Lk) x (B..., Lk, Ev), counted
    like fvcore's matmul (softmax and scaling are pointwise, not counted)."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for size in q[:-2]:
        batch *= size
    lq, e = q[-2], q[-1]
    lk, ev = k[-2], v[-1]
    return batch * lq * lk * (e + ev)


def profile(model: nn.Module, input_shape, pred_len: int | None = None) -> dict:
    """``{"params", "flops", "peak_memory"}`` of ``model`` on frames of ``input_shape``.

    input_shape: (B, T_in, C, H, W) of the given frames (batch 1 for the papers' FLOPs);
    pred_len: frames to predict (default: the model's ``pred_len``). ``flops`` follows the
    module's convention; ``peak_memory`` is the peak CUDA memory in bytes of one forward and
    backward (``training_loss`` on T_in + pred_len random frames) when the model's
    parameters are on a CUDA device, else None.
    """
    input_shape = _check_shape(input_shape)
    pred_len = getattr(model, "pred_len", 1) if pred_len is None else pred_len
    result = {"params": count_params(model), "flops": count_flops(model, input_shape, pred_len),
              "peak_memory": None}
    param = next(model.parameters())
    if param.is_cuda:
        b, t, c, h, w = input_shape
        frames = torch.rand(b, t + pred_len, c, h, w, device=param.device, dtype=param.dtype)
        torch.cuda.synchronize(param.device)
        torch.cuda.reset_peak_memory_stats(param.device)
        model.training_loss(frames).backward()
        torch.cuda.synchronize(param.device)
        result["peak_memory"] = torch.cuda.max_memory_allocated(param.device)
        model.zero_grad(set_to_none=True)
    return result


def _check_shape(input_shape) -> tuple:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 5 or min(shape) < 1:
        raise ValueError(f"input_shape: expected (B, T_in, C, H, W) with every entry >= 1, got "
                         f"{tuple(input_shape)}")
    return shape
