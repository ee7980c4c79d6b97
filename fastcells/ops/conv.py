"""The fused CPU backend's convolution: forward, data gradient and weight gradient each run
by the fastest of several algorithms, chosen per shape by timing once (``cudnn.benchmark``
style) and cached.

    y = conv2d(x, weight, bias, padding)      stride 1, no dilation, one group

Shapes: x (B, Cin, H, W), weight (Cout, Cin, kh, kw), bias (Cout,) or None, padding an int or
(ph, pw); y (B, Cout, H + 2 ph - kh + 1, W + 2 pw - kw + 1). :func:`conv2d_ref` is
``F.conv2d``, the truth (the reference backend never leaves it).

Algorithms, per pass (:data:`ALGORITHMS`):

- ``onednn``: ``F.conv2d`` / ``torch.nn.grad.conv2d_input`` / ``conv2d_weight`` (what eager
  PyTorch runs; oneDNN's direct or implicit-GEMM kernels).
- ``nnpack``: ``torch._nnpack_spatial_convolution`` (Winograd / FFT; float32 only). The data
  gradient is a forward NNPACK convolution of the output gradient with the flipped,
  transposed weight (zero padding k - 1 - p). NNPACK has no weight gradient in torch.
- ``winograd``: float32, square kernels 3 and 5, equal padding; C++ (needs the extension).
  Forward F(4x4, 3x3) and F(2x2, 5x5) (csrc/conv_winograd.cpp): 36 multiplies per output
  tile and channel pair instead of 144 and 100; the data gradient is the same forward of
  the output gradient with the flipped, transposed weight (padding k - 1 - p). Weight
  gradient F(3x3, 4x4) and F(5x5, 2x2) (csrc/conv_weight_grad.cpp): 36 instead of 144 and
  100. The transforms run eight (or four) tiles at a time; the products are batched
  matmuls (MKL). Points 0, +-1, +-2, infinity; error 1-3e-6 (5-10x oneDNN's).
- ``winograd8``: the same on 8 points (also +-1/2): forward and data gradient F(6x6, 3x3)
  and F(4x4, 5x5), weight gradient F(3x3, 6x6) and F(5x5, 4x4): 64 multiplies instead of
  324 and 400. For kernel 5 it measured 1.5-2.3x oneDNN per pass (``winograd``: 1.0-1.45x);
  for kernel 3 it loses to ``winograd``. Error 3-4.5e-6 at 64-128 channels, about 1.6x
  ``winograd``'s, so wider convolutions fail its accuracy check (below) and do not use it.
- ``matmul``: unfold + one matmul (im2col). Its weight gradient is ``sum_b dy[b] @
  unfold(x[b])^T``, which beats oneDNN's for inputs with few channels (benchmarks/NOTES.md);
  the forward and data gradient exist so that every pass can be forced to it.

The bias gradient is always ``dy.sum((0, 2, 3))``.

The choice (:func:`set_conv_algorithm`, :func:`conv_algorithm`, ``FASTCELLS_CONV_ALGO``):

- ``"auto"`` (the default): on the first call for a (pass, shapes, padding, dtype, layout,
  threads) key every applicable algorithm runs, interleaved, a few times; the fastest
  median is cached for the process and used from then on, but oneDNN keeps a key unless
  another algorithm is at least 10% faster (:data:`AUTO_MARGIN`) and oneDNN takes at
  least 3 ms on the probe (:data:`AUTO_MIN_MS`; smaller calls lost in real steps). A call
  whose needed passes all run oneDNN is plain ``F.conv2d``. Measured on the 2-core EPYC it
  was built on (benchmarks/results/cpu_conv.md, benchmarks/NOTES.md "CPU convolution
  algorithms"), with both Winograd sets among the candidates and the cells' summed
  convolutions (:mod:`fastcells.ops.conv_sum`), against the reference backend: 1.44-2.09x
  per cell step at 32 channels and kernel 3, 1.88-3.01x at 64 channels and kernel 5,
  1.55-2.52x at OpenSTL's 128 channels on 16x16 (oneDNN alone: 0.98-1.08x). Its costs:
  the first step of each shape runs every candidate, and the choice depends on machine
  load at that moment, so two processes may pick differently and differ in the last bits.
- ``"onednn"`` for all passes switches the dispatcher off: ``conv2d`` is then exactly
  ``F.conv2d`` (no autograd.Function, no cache), what eager PyTorch runs, bit for bit.
- an algorithm name, for every pass or per pass (``forward=``, ``input=``, ``weight=``):
  used wherever it applies. Where it cannot (NNPACK with float64, NNPACK missing from this
  torch build, a failing call), oneDNN runs and the reason is recorded in the cache (and
  warned once when the algorithm was forced).

Safety: before a key uses a non-oneDNN algorithm, it runs on random arguments of the key's
shapes and strides and its error is compared with oneDNN's: in float32 both against a
float64 oneDNN result, and the candidate may be at most :data:`VERIFY_FACTOR` times as far
off as oneDNN (or :data:`VERIFY_FLOOR`; for the Winograd algorithms a fixed 5e-6,
:data:`VERIFY_FLOORS`); in float64 it must equal oneDNN's to 1e-12. A
larger error or an exception rejects it for that key, with the reason recorded. An algorithm
that fails on a later call is replaced by oneDNN for that key, again recorded. For a fixed
choice results are deterministic (no atomics).
Where the weight pass runs Winograd, :func:`fastcells.set_weight_grad_steps` lets several
steps of one convolution compute their weight gradients in one call
(:mod:`fastcells.ops.weight_grad_steps`; off by default).
Under ``torch.compile`` tracing ``conv2d`` is plain ``F.conv2d`` (no timing in a trace).
:func:`conv_algorithm_cache` returns every choice with its timings and reasons.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
import warnings
from functools import partial
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _ext
from . import weight_grad_steps as _steps

PASSES = ("forward", "input", "weight")
ALGORITHMS = {
    "forward": ("onednn", "nnpack", "matmul", "winograd", "winograd8"),
    "input": ("onednn", "nnpack", "matmul", "winograd", "winograd8"),
    "weight": ("onednn", "matmul", "winograd", "winograd8"),
}
# Winograd algorithm -> its Toom-Cook point count (csrc/conv_winograd.cpp).
WINOGRAD_POINTS = {"winograd": 6, "winograd8": 8}
ENV_VAR = "FASTCELLS_CONV_ALGO"
# "auto": measured faster than oneDNN alone per step and rollout (module docstring)
DEFAULT = {p: "auto" for p in PASSES}

# Timing: each candidate runs once untimed (first-touch allocations, NNPACK's plans), then
# REPEATS interleaved rounds; fewer rounds when one run is slow.
REPEATS = 3
SLOW_RUN_S = 0.25
# unfold copies Cin * kh * kw planes; beyond this many bytes the matmul path is not tried.
MATMUL_MAX_BYTES = 512 << 20
# "auto" times the matmul path only for inputs this thin (Cin * kh * kw unfolded rows):
# it wins the weight gradient for 1-4 channel frames and loses every pass by 2-4x at 32+
# channels (benchmarks/NOTES.md), where timing it would only make the first step slower.
AUTO_MATMUL_MAX_ROWS = 128
# How far off (relative error over the whole tensor, against float64) a float32 algorithm may
# be: VERIFY_FACTOR times oneDNN's own error on the same probe, or VERIFY_FLOOR. oneDNN is at
# 1-4e-7 for forward and data gradient, 1-2e-6 for weight gradients (long sums). NNPACK's
# Winograd F(6x6, 3x3), which it picks for 3x3 kernels on small images, is at 2-5e-6, 10-20x
# oneDNN: over a step's chain of convolutions that used up the cells' 1e-5 contract
# (CELLS.md; measured 1.5e-5 on a Conv-TT-LSTM gradient), so it is rejected there. The
# Winograd weight gradient is at 1-2x oneDNN's at the benchmark sizes.
VERIFY_FACTOR = 4.0
# "auto" takes another algorithm over oneDNN only when its median is at most AUTO_MARGIN
# times oneDNN's. Medians of a few runs on a shared machine swing by 10-20%, a wrong
# non-oneDNN choice can cost 2x (NNPACK's 3x3 at 64x64, benchmarks/results/cpu_conv.md),
# and oneDNN is what eager PyTorch runs: a near tie goes to it.
AUTO_MARGIN = 0.9
# ... and only where oneDNN takes at least AUTO_MIN_MS on the probe. Small convolutions that
# the probe times faster elsewhere ran slower inside training steps: MS-LSTM at the mmnist
# preset with 16 channels (the demo's model), one iteration with the choices of each floor,
# side by side (2-core EPYC): no floor 1.76 s, 1 ms 1.57 s, 3 ms 1.37 s, oneDNN alone
# 1.40 s; with 32 channels 4.67 / 4.48 / 4.19 / 4.70 s (benchmarks/NOTES.md). The probe
# runs each candidate back to back on warm caches; in a step each small call also pays
# what the probe does not see (the autograd.Function's separate backward calls, switching
# thread pools, cold workspaces), which a sub-millisecond saving does not cover.
AUTO_MIN_MS = 3.0
VERIFY_FLOOR = 1e-7
# Our Winograd convolutions (6 points: 0, +-1, +-2, infinity) are at 1-3e-6 per forward and
# data gradient, 5-10x oneDNN, at every size measured; whole cell steps with every pass on
# them stay at 2.3-4.3e-6 of a float64 reference (all four cells at the three target sizes,
# benchmarks/NOTES.md), within the 1e-5 contract. Their bound is this fixed 5e-6 instead of
# a multiple of oneDNN's error; a result past it (a bug, an overflow) is still rejected.
VERIFY_FLOOR_WINOGRAD = 5e-6
# The 8-point set (also +-1/2) has about 1.6x the 6-point set's error: 3-4.5e-6 per pass at
# 64-128 input channels (benchmarks/NOTES.md).
VERIFY_FLOOR_WINOGRAD8 = 5e-6
VERIFY_FLOORS = {"winograd": VERIFY_FLOOR_WINOGRAD, "winograd8": VERIFY_FLOOR_WINOGRAD8}
VERIFY_RTOL64 = 1e-12  # float64: equal to oneDNN's float64 result up to rounding
_DTYPES = (torch.float32, torch.float64)


def conv2d_ref(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
               padding=0) -> Tensor:
    """Eager reference: ``F.conv2d(x, weight, bias, padding=padding)``."""
    return F.conv2d(x, weight, bias, padding=padding)


# ----------------------------------------------------------------------------- algorithms
def _nnpack_unavailable_reason() -> Optional[str]:
    """None when NNPACK can run; else why not. ``torch._nnpack_available()`` also
    initialises NNPACK (without it every NNPACK convolution fails)."""
    try:
        if torch._nnpack_available():
            return None
    except Exception as exc:  # a torch build without the binding
        return f"torch._nnpack_available() raised {type(exc).__name__}: {exc}"
    return "this torch build has no NNPACK (torch._nnpack_available() is False)"


def _unfold_bytes(x: Tensor, weight: Tensor, out_hw) -> int:
    b, cin = x.shape[:2]
    return b * cin * weight.shape[2] * weight.shape[3] * out_hw[0] * out_hw[1] \
        * x.element_size()


def _not_applicable(algorithm: str, x: Tensor, weight: Tensor, pad, out_hw) -> Optional[str]:
    """Why ``algorithm`` cannot take this convolution, or None."""
    if algorithm == "nnpack":
        if x.dtype != torch.float32:
            return f"NNPACK takes float32 only, got {x.dtype}"
        if weight.shape[2] - 1 - pad[0] < 0 or weight.shape[3] - 1 - pad[1] < 0:
            return "padding larger than kernel - 1 (the data gradient's padding is negative)"
        return _nnpack_unavailable_reason()
    if algorithm in WINOGRAD_POINTS:
        k = weight.shape[2]
        if x.dtype != torch.float32:
            return f"the Winograd convolutions are float32 only, got {x.dtype}"
        if k not in (3, 5) or weight.shape[3] != k or pad[0] != pad[1]:
            return (f"the Winograd convolutions take square 3x3 and 5x5 kernels with equal "
                    f"padding, got {tuple(weight.shape[2:])} with padding {pad}")
        if pad[0] > k - 1:
            return "padding larger than kernel - 1 (the data gradient's padding is negative)"
        if not _ext.cpp_available():
            return "the C++ extension is not built (" + _ext.BUILD_HINT.splitlines()[0] + ")"
    if algorithm == "matmul":
        size = _unfold_bytes(x, weight, out_hw)
        if size > MATMUL_MAX_BYTES:
            return f"unfold buffer {size >> 20} MiB > {MATMUL_MAX_BYTES >> 20} MiB"
    return None


def _forward_onednn(x, weight, bias, pad):
    return F.conv2d(x, weight, bias, padding=pad)


def _forward_nnpack(x, weight, bias, pad):
    return torch._nnpack_spatial_convolution(x.contiguous(), weight.contiguous(),
                                             None if bias is None else bias.contiguous(),
                                             list(pad))


def _forward_matmul(x, weight, bias, pad):
    b = x.shape[0]
    ho = x.shape[2] + 2 * pad[0] - weight.shape[2] + 1
    wo = x.shape[3] + 2 * pad[1] - weight.shape[3] + 1
    cols = F.unfold(x, weight.shape[2:], padding=pad)  # (B, Cin*kh*kw, Ho*Wo)
    w = weight.reshape(weight.shape[0], -1).expand(b, -1, -1)
    # Written through a view into a tensor of the output's shape: an autograd.Function's
    # output must not be a view (the cells add into it in place).
    y = x.new_empty((b, weight.shape[0], ho, wo))
    if bias is None:
        torch.bmm(w, cols, out=y.view(b, weight.shape[0], ho * wo))
    else:
        torch.baddbmm(bias.view(1, -1, 1), w, cols, out=y.view(b, weight.shape[0], ho * wo))
    return y


def _forward_winograd(x, weight, bias, pad, points=6):
    return _ext.cpp_extension().conv2d_winograd(x, weight, bias, pad[0], 0, points)


def _input_onednn(x_shape, weight, grad, pad):
    return torch.nn.grad.conv2d_input(x_shape, weight, grad, padding=pad)


def _input_nnpack(x_shape, weight, grad, pad):
    # conv_transpose with stride 1 = convolution with the kernel flipped and in/out swapped.
    w_t = weight.flip(2, 3).transpose(0, 1).contiguous()
    pad_t = [weight.shape[2] - 1 - pad[0], weight.shape[3] - 1 - pad[1]]
    return torch._nnpack_spatial_convolution(grad.contiguous(), w_t, None, pad_t)


def _input_matmul(x_shape, weight, grad, pad):
    w = weight.reshape(weight.shape[0], -1)
    cols = torch.matmul(w.t(), grad.flatten(2))  # (B, Cin*kh*kw, Ho*Wo)
    return F.fold(cols, x_shape[2:], weight.shape[2:], padding=pad)


def _input_winograd(x_shape, weight, grad, pad, points=6):
    w_t = weight.flip(2, 3).transpose(0, 1).contiguous()
    return _ext.cpp_extension().conv2d_winograd(grad, w_t, None,
                                                weight.shape[2] - 1 - pad[0], 0, points)


def _weight_onednn(x, weight_shape, grad, pad):
    return torch.nn.grad.conv2d_weight(x, weight_shape, grad, padding=pad)


def _weight_matmul(x, weight_shape, grad, pad):
    cols = F.unfold(x, weight_shape[2:], padding=pad)  # (B, Cin*kh*kw, Ho*Wo)
    return torch.bmm(grad.flatten(2), cols.transpose(1, 2)).sum(0).view(weight_shape)


def _weight_winograd(x, weight_shape, grad, pad, points=6):
    return _ext.cpp_extension().conv_weight_grad_winograd(x, grad, weight_shape[2], pad[0], 0,
                                                          points)


IMPLEMENTATIONS: dict[str, dict[str, Callable]] = {
    "forward": {"onednn": _forward_onednn, "nnpack": _forward_nnpack,
                "matmul": _forward_matmul, "winograd": _forward_winograd,
                "winograd8": partial(_forward_winograd, points=8)},
    "input": {"onednn": _input_onednn, "nnpack": _input_nnpack, "matmul": _input_matmul,
              "winograd": _input_winograd, "winograd8": partial(_input_winograd, points=8)},
    "weight": {"onednn": _weight_onednn, "matmul": _weight_matmul,
               "winograd": _weight_winograd, "winograd8": partial(_weight_winograd, points=8)},
}


# ----------------------------------------------------------------------------- the setting
def _parse(spec) -> dict[str, str]:
    """``"auto"``, an algorithm name, ``"forward=nnpack,weight=matmul"`` or a dict -> a
    setting per pass (passes not named keep ``"auto"`` in the string/dict forms)."""
    if isinstance(spec, dict):
        items = dict(spec)
    elif isinstance(spec, str) and "=" in spec:
        items = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, value = part.partition("=")
            items[name.strip()] = value.strip()
    elif isinstance(spec, str):
        spec = spec.strip()
        offered = [p for p in PASSES if spec == "auto" or spec in ALGORITHMS[p]]
        if len(offered) != len(PASSES):
            have = ", ".join(f"{p}: {'/'.join(ALGORITHMS[p])}" for p in PASSES)
            raise ValueError(
                f"conv algorithm: {spec!r} is not an algorithm of every pass; pass 'auto', "
                f"one of {sorted(set(ALGORITHMS['weight']) & set(ALGORITHMS['forward']))} "
                f"for all passes, or per pass (forward=..., input=..., weight=...; in the "
                f"environment 'forward=nnpack,input=nnpack,weight=matmul'). Offered: {have}")
        return {p: spec for p in PASSES}
    else:
        raise TypeError(f"conv algorithm: expected a string or a dict of passes, got "
                        f"{type(spec).__name__}")
    setting = {p: "auto" for p in PASSES}
    for name, value in items.items():
        if name not in PASSES:
            raise ValueError(f"conv algorithm: unknown pass {name!r}; passes are {PASSES}")
        if value != "auto" and value not in ALGORITHMS[name]:
            raise ValueError(f"conv algorithm: {name}={value!r}; expected 'auto' or one of "
                             f"{ALGORITHMS[name]}")
        setting[name] = value
    return setting


def _from_env() -> dict[str, str]:
    spec = os.environ.get(ENV_VAR, "").strip()
    if not spec:
        return dict(DEFAULT)
    try:
        return _parse(spec)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"environment variable {ENV_VAR}={spec!r}: {exc}") from None


_setting: dict[str, str] = _from_env()


def set_conv_algorithm(algorithm: str | None = None, *, forward: str | None = None,
                       input: str | None = None, weight: str | None = None) -> None:
    """Sets how the fused CPU backend's convolutions choose their algorithm.

    ``algorithm`` applies to all three passes: ``"auto"`` (time once per shape, cache),
    ``"onednn"`` (plain ``F.conv2d``: the dispatcher off), ``"matmul"``, ``"winograd"`` or
    ``"winograd8"``. The keywords set one pass each, overriding ``algorithm``: ``forward``
    and ``input`` (the data gradient) take ``"auto"``, ``"onednn"``, ``"nnpack"``,
    ``"matmul"``, ``"winograd"``, ``"winograd8"``; ``weight`` takes ``"auto"``,
    ``"onednn"``, ``"matmul"``, ``"winograd"``, ``"winograd8"``.
    Unnamed passes keep their setting. The
    environment variable ``FASTCELLS_CONV_ALGO`` gives the initial setting in the same words
    (``"auto"``, ``"onednn"``, or ``"forward=nnpack,input=nnpack,weight=matmul"``, where
    passes not named are ``"auto"``); without it every pass starts at ``"auto"`` (the
    module docstring says why; ``"onednn"`` is eager PyTorch's convolution bit for bit)."""
    new = dict(_setting) if algorithm is None else _parse(algorithm)
    for name, value in (("forward", forward), ("input", input), ("weight", weight)):
        if value is not None:
            new[name] = _parse({name: value})[name]
    _setting.update(new)


def get_conv_algorithm() -> dict[str, str]:
    """The current setting per pass, e.g. ``{"forward": "auto", "input": "auto",
    "weight": "matmul"}``."""
    return dict(_setting)


@contextlib.contextmanager
def conv_algorithm(algorithm: str | None = None, **passes):
    """``with conv_algorithm("onednn"): ...`` sets the algorithm (as
    :func:`set_conv_algorithm`) inside the block and restores the previous setting."""
    saved = dict(_setting)
    try:
        set_conv_algorithm(algorithm, **passes)
        yield
    finally:
        _setting.clear()
        _setting.update(saved)


# ----------------------------------------------------------------------------- the cache
class ConvKey(NamedTuple):
    """What a choice is cached under."""
    input: tuple
    weight: tuple
    padding: tuple
    dtype: str
    layout: str  # of x: "contiguous", "channels_last" or "strided"
    threads: int


class Choice(NamedTuple):
    algorithm: str           # what runs
    setting: str             # what was asked: "auto" or a forced algorithm
    ms: dict                 # algorithm -> median milliseconds (timed candidates only)
    rejected: dict           # algorithm -> why it is not used for this key
    kept: str = ""           # why "auto" kept oneDNN although another timed faster


_cache: dict[tuple, Choice] = {}
_lock = threading.Lock()
_warned: set = set()
# How many times candidates were timed (tests check one timing per key and pass).
stats = {"timings": 0}


def _layout(x: Tensor) -> str:
    if x.is_contiguous():
        return "contiguous"
    if x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strided"


def conv_algorithm_cache() -> dict:
    """Every choice made so far: ``{ConvKey: {pass: {"algorithm", "setting", "ms",
    "rejected", "kept"}}}``. ``ms`` holds the median time of each candidate that was timed
    (empty for a forced choice); ``rejected`` why an algorithm was not used (not applicable,
    unavailable, failed, or disagreed with oneDNN); ``kept`` why ``auto`` kept oneDNN
    although another candidate timed faster (:data:`AUTO_MARGIN`, :data:`AUTO_MIN_MS`),
    else empty."""
    out: dict = {}
    with _lock:
        items = list(_cache.items())
    for (pass_, setting, key), choice in items:
        out.setdefault(key, {})[pass_ if setting == "auto" else f"{pass_}[{setting}]"] = {
            "algorithm": choice.algorithm, "setting": choice.setting,
            "ms": dict(choice.ms), "rejected": dict(choice.rejected), "kept": choice.kept}
    return out


def clear_conv_algorithm_cache() -> None:
    """Forgets every choice: the next call of each shape is timed again."""
    with _lock:
        _cache.clear()
    _warned.clear()
    stats["timings"] = 0


def _rel_error(a: Tensor, b: Tensor) -> float:
    a, b = a.double(), b.double()
    denom = b.norm().item()
    diff = (a - b).norm().item()
    return diff / denom if denom > 0 else diff


def _run(impl: Callable, args) -> tuple[Optional[Tensor], Optional[str]]:
    try:
        return impl(*args), None
    except Exception as exc:  # NNPACK raises RuntimeError for what it cannot take
        return None, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


class _Truth:
    """oneDNN's result on a probe and, for float32, the float64 result (computed once, when a
    candidate is first checked)."""

    def __init__(self, pass_: str, probe: tuple, onednn: Tensor):
        self.pass_, self.probe, self.onednn = pass_, probe, onednn
        self.exact = None

    def check(self, result: Tensor, algorithm: str) -> Optional[str]:
        if result.shape != self.onednn.shape:
            return f"wrong shape {tuple(result.shape)} (expected {tuple(self.onednn.shape)})"
        if self.onednn.dtype == torch.float64:
            err = _rel_error(result, self.onednn)
            if not err <= VERIFY_RTOL64:  # NaN fails too
                return f"disagrees with oneDNN: relative error {err:.1e} > {VERIFY_RTOL64:.0e}"
            return None
        if self.exact is None:
            probe64 = tuple(a.double() if isinstance(a, Tensor) else a for a in self.probe)
            self.exact = IMPLEMENTATIONS[self.pass_]["onednn"](*probe64)
            self.ref_err = _rel_error(self.onednn, self.exact)
        err = _rel_error(result, self.exact)
        floor = VERIFY_FLOORS.get(algorithm, VERIFY_FLOOR)
        limit = max(VERIFY_FACTOR * self.ref_err, floor)
        if not err <= limit:  # NaN fails too
            return (f"disagrees with oneDNN: relative error {err:.1e} against float64, "
                    f"oneDNN's {self.ref_err:.1e} (limit {VERIFY_FACTOR:g}x, at least "
                    f"{floor:.0e})")
        return None


def _random_like(t: Tensor, gen: torch.Generator) -> Tensor:
    """Standard normal values in a tensor of ``t``'s sizes and strides (so its layout);
    contiguous when ``t``'s elements overlap (an expanded gradient, e.g. of ``y.sum()``)."""
    if any(st == 0 and n > 1 for st, n in zip(t.stride(), t.shape)):
        return torch.empty(t.shape, dtype=t.dtype).normal_(generator=gen)
    return torch.empty_strided(t.size(), t.stride(), dtype=t.dtype).normal_(generator=gen)


def _probe(pass_: str, args) -> tuple:
    """Arguments like ``args`` (sizes, strides, dtype) holding random values. Choices are
    timed and checked on them, not on the call's values: a layer's first step convolves a
    zero state, on which any algorithm is exact and a check would prove nothing."""
    gen = torch.Generator().manual_seed(0)
    a, b, c, pad = args
    if pass_ == "forward":  # (x, weight, bias, pad)
        return (_random_like(a, gen), _random_like(b, gen),
                None if c is None else _random_like(c, gen), pad)
    if pass_ == "input":  # (x_shape, weight, grad, pad)
        return a, _random_like(b, gen), _random_like(c, gen), pad
    return _random_like(a, gen), b, _random_like(c, gen), pad  # (x, weight_shape, grad, pad)


def _choose(pass_: str, setting: str, args, x: Tensor, weight: Tensor, pad,
            out_hw) -> Choice:
    """Makes the choice for a key: every candidate (``setting``'s, or all in auto mode) is
    run on random arguments like ``args`` and checked against oneDNN; in auto mode the
    survivors are timed and the fastest is chosen."""
    impls = IMPLEMENTATIONS[pass_]
    rejected: dict[str, str] = {}
    candidates = ALGORITHMS[pass_] if setting == "auto" else ("onednn", setting)
    usable = []
    for algo in dict.fromkeys(candidates):  # ordered, no duplicates
        reason = None if algo == "onednn" else _not_applicable(algo, x, weight, pad, out_hw)
        if (not reason and algo == "matmul" and setting == "auto"
                and weight[0].numel() > AUTO_MATMUL_MAX_ROWS):
            reason = (f"not timed by auto: Cin*kh*kw = {weight[0].numel()} > "
                      f"{AUTO_MATMUL_MAX_ROWS} (force it to use it)")
        if reason:
            rejected[algo] = reason
        else:
            usable.append(algo)
    probe = _probe(pass_, args)
    # oneDNN first: its result is the check of the others.
    truth = None
    first_ms: dict[str, float] = {}
    for algo in usable:
        t0 = time.perf_counter()
        if algo == "onednn":  # its errors are the caller's (bad arguments): raised
            truth = _Truth(pass_, probe, impls[algo](*probe))
            reason = None
        else:
            out, reason = _run(impls[algo], probe)
        first_ms[algo] = (time.perf_counter() - t0) * 1e3
        if reason is None and algo != "onednn":
            reason = truth.check(out, algo)
        if reason:
            rejected[algo] = reason
    del truth
    survivors = [a for a in usable if a not in rejected]
    ms: dict[str, float] = {}
    if setting == "auto" and len(survivors) > 1:
        stats["timings"] += 1
        rounds = 1 if max(first_ms[a] for a in survivors) > SLOW_RUN_S * 1e3 else REPEATS
        times: dict[str, list] = {a: [] for a in survivors}
        for _ in range(rounds):
            for algo in survivors:
                t0 = time.perf_counter()
                impls[algo](*probe)
                times[algo].append((time.perf_counter() - t0) * 1e3)
        ms = {a: statistics.median(t) for a, t in times.items()}
        algorithm = pick(ms)
    else:
        algorithm = setting if setting in survivors else "onednn"
    if setting not in ("auto", "onednn") and setting in rejected:
        _warn_once(pass_, setting, rejected[setting])
    return Choice(algorithm, setting, ms, rejected,
                  kept_onednn(ms) if ms and algorithm == "onednn" else "")


def _decide(ms: dict) -> tuple[str, str]:
    """(the algorithm ``"auto"`` takes, why it kept oneDNN over a faster one or "")."""
    best = min(ms, key=ms.get)
    if "onednn" not in ms or best == "onednn":
        return best, ""
    if ms["onednn"] < AUTO_MIN_MS:
        return "onednn", (f"oneDNN takes {ms['onednn']:.2f} ms, under AUTO_MIN_MS = "
                          f"{AUTO_MIN_MS:g} ms (the fastest, {best}, {ms[best]:.2f} ms)")
    if ms[best] > AUTO_MARGIN * ms["onednn"]:
        return "onednn", (f"the fastest, {best}, {ms[best]:.2f} ms, is not "
                          f"{1 - AUTO_MARGIN:.0%} faster than oneDNN's {ms['onednn']:.2f} ms "
                          f"(AUTO_MARGIN = {AUTO_MARGIN:g})")
    return best, ""


def pick(ms: dict) -> str:
    """The algorithm ``"auto"`` takes given median milliseconds per candidate: the fastest,
    unless it is not oneDNN and not at least 1 / AUTO_MARGIN times as fast as oneDNN, or
    oneDNN takes under AUTO_MIN_MS."""
    return _decide(ms)[0]


def kept_onednn(ms: dict) -> str:
    """Why :func:`pick` keeps oneDNN over a faster candidate, or ``""`` where it does not."""
    return _decide(ms)[1]


def _warn_once(pass_: str, algo: str, reason: str) -> None:
    kind = reason.split(":")[0]  # once per kind of reason, not per measured error
    if (pass_, algo, kind) not in _warned:
        _warned.add((pass_, algo, kind))
        warnings.warn(f"fastcells conv2d: {pass_} pass forced to {algo!r}, which cannot run "
                      f"here ({reason}); running oneDNN instead (recorded in "
                      f"fastcells.conv_algorithm_cache())", RuntimeWarning, stacklevel=5)


def _choice(pass_: str, key: ConvKey, args, x: Tensor, weight: Tensor, pad,
            out_hw) -> Optional[Choice]:
    """The cached choice of ``pass_`` for ``key``, made now if there is none; None where the
    setting is ``"onednn"`` (nothing chosen, nothing cached)."""
    setting = _setting[pass_]
    if setting == "onednn":
        return None
    ck = (pass_, setting, key)
    choice = _cache.get(ck)
    if choice is None:
        choice = _choose(pass_, setting, args, x, weight, pad, out_hw)
        with _lock:
            _cache[ck] = choice
    return choice


def _dispatch(pass_: str, key: ConvKey, args, x: Tensor, weight: Tensor, pad,
              out_hw) -> Tensor:
    choice = _choice(pass_, key, args, x, weight, pad, out_hw)
    if choice is None or choice.algorithm == "onednn":
        return IMPLEMENTATIONS[pass_]["onednn"](*args)
    out, reason = _run(IMPLEMENTATIONS[pass_][choice.algorithm], args)
    if reason is None:
        return out
    # It worked for this key before and fails now: oneDNN from here on, reason recorded.
    setting = choice.setting
    with _lock:
        _cache[(pass_, setting, key)] = Choice("onednn", setting, choice.ms,
                                               {**choice.rejected, choice.algorithm: reason},
                                               choice.kept)
    if setting != "auto":
        _warn_once(pass_, setting, reason)
    return IMPLEMENTATIONS[pass_]["onednn"](*args)


def _weight_pass(ctx, edges, weights, route, key: ConvKey, args, weight_like: Tensor,
                 out_hw, finish: Callable[[Tensor], list]) -> list:
    """A step's weight gradients (for ``weights``, backward inputs ``edges`` of ``ctx``):
    the convolution's weight gradient from ``args`` = (x, weight shape, grad, pad), mapped
    to them by ``finish``. Where the pass runs Winograd, the pair may be kept and summed with
    other steps' (:mod:`fastcells.ops.weight_grad_steps`)."""
    x, _, grad, pad = args
    choice = _choice("weight", key, args, x, weight_like, pad, out_hw)
    if choice is not None and choice.algorithm in WINOGRAD_POINTS:
        grads = _steps.keep(ctx, edges, weights, route, x, grad, weight_like.shape[2], pad[0],
                            WINOGRAD_POINTS[choice.algorithm], finish)
        if grads is not None:
            return grads
    return finish(_dispatch("weight", key, args, x, weight_like, pad, out_hw))


# ----------------------------------------------------------------------------- autograd
class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, pad, key, out_hw):
        ctx.pad, ctx.key, ctx.has_bias = pad, key, bias is not None
        ctx.save_for_backward(x, weight)
        return _dispatch("forward", key, (x, weight, bias, pad), x, weight, pad, out_hw)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        pad, key = ctx.pad, ctx.key
        out_hw = grad.shape[2:]
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _dispatch("input", key, (x.shape, weight, grad, pad), x, weight, pad, out_hw)
        if ctx.needs_input_grad[1]:
            gw, = _weight_pass(ctx, (1,), (weight,), None, key, (x, weight.shape, grad, pad),
                               weight, out_hw, lambda g: [g])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3))
        return gx, gw, gb, None, None, None


def _padding(padding) -> tuple[int, int]:
    if isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return padding, padding
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, int) and not isinstance(p, bool) and p >= 0
                    for p in padding)):
        return tuple(padding)
    raise ValueError(f"padding: expected a non-negative int or a pair (ph, pw), got "
                     f"{padding!r}")


def _validate(x: Tensor, weight: Tensor, bias: Optional[Tensor], pad) -> tuple[int, int]:
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x: expected a (B, Cin, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if not isinstance(weight, Tensor) or weight.dim() != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight: expected (Cout, {x.shape[1]}, kh, kw) for x of "
                         f"{x.shape[1]} channels, got "
                         f"{tuple(weight.shape) if isinstance(weight, Tensor) else weight}")
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != weight.shape[:1]):
        raise ValueError(f"bias: expected None or ({weight.shape[0]},), got "
                         f"{tuple(bias.shape) if isinstance(bias, Tensor) else bias!r}")
    dtypes = {t.dtype for t in (x, weight, bias) if t is not None}
    if len(dtypes) > 1:
        raise TypeError(f"x, weight and bias must share one dtype, got "
                        f"{sorted(map(str, dtypes))}")
    ho = x.shape[2] + 2 * pad[0] - weight.shape[2] + 1
    wo = x.shape[3] + 2 * pad[1] - weight.shape[3] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"x: {tuple(x.shape[2:])} is smaller than the kernel "
                         f"{tuple(weight.shape[2:])} with padding {pad}")
    return ho, wo


def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, padding=0) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1) with each pass run by the
    algorithm :func:`set_conv_algorithm` selects (module docstring). CPU floating tensors
    only go through the dispatcher; other devices, other dtypes, a ``torch.compile`` trace,
    and the setting ``"onednn"`` for every pass run ``F.conv2d`` itself."""
    if _dispatcher_off(x):
        return F.conv2d(x, weight, bias, padding=padding)
    pad = _padding(padding)
    out_hw = _validate(x, weight, bias, pad)
    key = _key(x.shape, weight.shape, pad, x.dtype, _layout(x))
    grad = torch.is_grad_enabled()
    needed = ["forward"]
    if grad and x.requires_grad:
        needed.append("input")
    if grad and weight.requires_grad:
        needed.append("weight")
    if len(needed) == 1 and not (grad and bias is not None and bias.requires_grad):
        # no gradient to compute (inference, a frozen model): the forward alone
        return _dispatch("forward", key, (x, weight, bias, pad), x, weight, pad, out_hw)
    if all(_runs_onednn(p, key) for p in needed):
        # Every pass this call needs was chosen oneDNN: eager's convolution itself, without
        # the autograd.Function around it (its separate input and weight gradient calls).
        return F.conv2d(x, weight, bias, padding=pad)
    return _Conv2d.apply(x, weight, bias, pad, key, out_hw)


def _dispatcher_off(x: Tensor) -> bool:
    """Whether a convolution of ``x`` is plain ``F.conv2d``: a ``torch.compile`` trace, not a
    CPU floating tensor, or the setting ``"onednn"`` for every pass."""
    return (torch.compiler.is_compiling() or x.device.type != "cpu" or x.dtype not in _DTYPES
            or all(_setting[p] == "onednn" for p in PASSES))


def _key(x_shape, w_shape, pad, dtype: torch.dtype, layout: str) -> ConvKey:
    return ConvKey(tuple(x_shape), tuple(w_shape), pad, str(dtype).replace("torch.", ""),
                   layout, torch.get_num_threads())


def _runs_onednn(pass_: str, key: ConvKey) -> bool:
    """Whether ``pass_`` of ``key`` is known to run oneDNN (forced, or chosen and cached)."""
    setting = _setting[pass_]
    if setting == "onednn":
        return True
    choice = _cache.get((pass_, setting, key))
    return choice is not None and choice.algorithm == "onednn"


__all__ = ["ALGORITHMS", "AUTO_MARGIN", "AUTO_MIN_MS", "VERIFY_FACTOR", "ENV_VAR", "ConvKey",
           "clear_conv_algorithm_cache", "conv2d", "conv2d_ref", "conv_algorithm",
           "conv_algorithm_cache", "get_conv_algorithm", "pick", "set_conv_algorithm"]
