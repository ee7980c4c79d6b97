"""Compiles the package's Triton kernels for sm_90 (H100/H200) without a GPU, as real
launches would.

CI has no GPU, so the tests run the kernels in Triton's interpreter (TRITON_INTERPRET=1),
which never lowers them for a GPU. Here the launchers of :mod:`fastcells.kernels` (which
take ``launch`` first and call ``launch(kernel)[grid](*args, **meta)``) run on CPU tensors
with a :class:`Capture` as ``launch``: every kernel call is recorded instead of run.
:func:`specialize` passes the recorded arguments through Triton's own JIT binder, built for
an sm_90 target, so the signature is the one a launch on an H100 compiles: tensors become
typed pointers (``*fp64``, ``*bf16``, ...) with the divisibility-16 hint when aligned, ints
i32 or i64 with the divisibility-16 hint when a multiple of 16 and a constant when equal to
1 (the unit stride of each layout), floats fp32, bools u1, None and the constexpr keywords
(``tl.float32``/``tl.float64`` dtypes like ``ACC=``, flags, tile sizes) constants, and
``num_warps``/``num_stages`` compile options. :func:`compile_for_sm90` runs
``triton.compile`` for that specialization (once per process), and :func:`resource_usage`
reads registers and stack (spills) from ``cuobjdump -res-usage``. The binder and
``JITFunction._pack_args`` are Triton internals (as of Triton 3.9): if a Triton upgrade
moves them, :func:`specialize` is the one place to follow it.

:data:`CASES` calls every launcher with realistic arguments (64x64 frames, C = 32, the CTT
defaults and a configuration with more sources than one launch takes) in float32, bfloat16,
float16 and float64, contiguous and channels_last (:func:`wanted`), and says how many
launches of which kernel each call makes.

Run without TRITON_INTERPRET (the interpreter replaces ``triton.jit``); used by
tests/test_triton_sm90.py (all cases, in parallel shards) and
tests/test_triton_conv_gates.py (``--only conv_gates``)::

    python tests/triton_sm90.py                        # every case; prints the table
    python tests/triton_sm90.py --only conv_gates      # the cases whose name starts so
    python tests/triton_sm90.py --shard 0/2 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
          torch.float64: "fp64"}
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


# ------------------------------------------------------------------------------ capture
def kernel_name(kernel) -> str:
    """``module.function`` of a kernel, e.g. ``convlstm_gates._forward_kernel``."""
    return f"{kernel.fn.__module__.rsplit('.', 1)[-1]}.{kernel.fn.__name__}"


@dataclass
class Specialization:
    key: str  # as Triton's in-memory kernel cache key: same key, same compiled kernel
    signature: dict
    constexprs: dict
    attrs: dict
    options: object  # the backend's options (CUDAOptions)


@dataclass
class Launch:
    kernel: object
    grid: tuple
    args: tuple
    kwargs: dict
    _spec: Specialization | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return kernel_name(self.kernel)

    @property
    def specialization(self) -> Specialization:
        if self._spec is None:
            self._spec = specialize(self.kernel, self.args, self.kwargs)
        return self._spec


class Capture:
    """A ``launch`` for the launchers: records every kernel call in :attr:`launches`
    (in order, repeats included) instead of running it."""

    def __init__(self):
        self.launches: list[Launch] = []

    def __call__(self, kernel):
        return _Grid(self, kernel)

    def unique(self) -> dict:
        """The launches de-duplicated by (kernel, specialization): ``{key: Launch}``, the
        first launch of each, in launch order."""
        out = {}
        for launch in self.launches:
            out.setdefault((launch.name, launch.specialization.key), launch)
        return out

    def counts(self) -> dict:
        """Launches per kernel name."""
        out = {}
        for launch in self.launches:
            out[launch.name] = out.get(launch.name, 0) + 1
        return out


class _Grid:
    def __init__(self, capture, kernel):
        self.capture, self.kernel = capture, kernel

    def __getitem__(self, grid):
        def call(*args, **kwargs):
            self.capture.launches.append(Launch(self.kernel, grid, args, dict(kwargs)))
        return call


# ------------------------------------------------------------------ specialize, compile
_BACKEND = []
_BINDERS = {}
_COMPILED = {}


def _backend():
    if not _BACKEND:
        _BACKEND.append(make_backend(TARGET))
    return _BACKEND[0]


# The compilation knobs ``JITFunction.run`` passes to the binder as launch keywords, in the
# Triton versions this project supports (pyproject): 3.6 has instrumentation_mode, 3.9 adds
# fpsan_homomorphic_casts. Only those the installed Triton has: the binder of one that lacks
# a knob rejects it as an unknown keyword.
_RUN_COMPILATION_KNOBS = tuple(k for k in ("instrumentation_mode", "fpsan_homomorphic_casts")
                               if hasattr(knobs.compilation, k))


def specialize(kernel, args, kwargs) -> Specialization:
    """The specialization ``kernel[grid](*args, **kwargs)`` gets on an sm_90 GPU, from
    Triton's JIT binder (what ``JITFunction.run`` does before compiling) built for that
    target instead of the current device's."""
    if not isinstance(kernel, JITFunction):  # an InterpretedFunction
        raise RuntimeError("TRITON_INTERPRET=1 replaced triton.jit: run without it")
    backend = _backend()
    if kernel not in _BINDERS:
        _BINDERS[kernel] = create_function_from_signature(kernel.signature, kernel.params,
                                                          backend)
    kwargs = dict(kwargs)
    # the compile options JITFunction.run adds to the launch's keywords
    kwargs["debug"] = kwargs.get("debug", kernel.debug) or knobs.runtime.debug
    for option in _RUN_COMPILATION_KNOBS:
        kwargs[option] = getattr(knobs.compilation, option)
    bound, spec, options = _BINDERS[kernel](*args, **kwargs)
    key = str(spec) + str(options)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, spec,
                                                              options)
    return Specialization(key, signature, constexprs, attrs, options)


def compile_for_sm90(kernel, args=(), kwargs=None, spec: Specialization | None = None):
    """``triton.compile`` of ``kernel[grid](*args, **kwargs)`` for sm_90 (or of ``spec``);
    each specialization once per process."""
    spec = spec or specialize(kernel, args, kwargs or {})
    key = (kernel_name(kernel), spec.key)
    if key not in _COMPILED:
        src = ASTSource(fn=kernel, signature=spec.signature, constexprs=spec.constexprs,
                        attrs=spec.attrs)
        _COMPILED[key] = triton.compile(src, target=TARGET, options=spec.options.__dict__)
    return _COMPILED[key]


def resource_usage(compiled) -> dict:
    """``{"REG": .., "STACK": .., "LOCAL": .., "SHARED": ..}`` of a compiled kernel:
    registers per thread and stack bytes (> 0: registers spilled to local memory) from
    ``cuobjdump -res-usage`` of its cubin, and the shared memory a launch allocates (Triton's
    is dynamic, which cuobjdump does not show)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        out = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", path],
                             capture_output=True, text=True, check=True).stdout
    usage = {}
    for line in out.splitlines():
        if "REG:" in line:
            for word in line.replace(",", " ").split():
                name, _, value = word.partition(":")
                if name in ("REG", "STACK", "LOCAL") and value.isdigit():
                    usage[name] = int(value)
    usage["SHARED"] = compiled.metadata.shared
    return usage


# -------------------------------------------------------------------------------- cases
@dataclass
class Case:
    name: str  # "<module>.<launcher> <variant>"
    dtype: torch.dtype
    layout: str
    call: Callable  # call(launch): runs the launcher
    expect: dict  # kernel name -> launches of one call

    @property
    def label(self) -> str:
        return f"{self.name} {DTYPES[self.dtype]} {self.layout}"


B, C, H, W = 2, 32, 64, 64  # gate kernels: 64x64 frames, C = 32 (no spills required)
CIN, KSIZE = 1, 3  # conv_gates: a 1-channel input (Moving MNIST), 3x3
CTT = {"N3M3": dict(order=3, steps=3), "N2M6": dict(order=2, steps=6)}  # D = 1 and D = 5
RANK, CTT_K = 8, 5  # the ConvTTLSTMCell defaults


def _cases(dtype: torch.dtype, layout: str, C: int = C) -> list:
    from fastcells.kernels import conv_gates, convlstm_gates, ctt, dual_memory_gates
    from fastcells.kernels import causal_lstm_gates, ghu_gates, output_gate

    fmt = LAYOUTS[layout]

    def planes(k, hw=(H, W)):  # (B, k, H, W) in this layout; contents do not matter
        return torch.empty((B, k, *hw), dtype=dtype, memory_format=fmt)

    def halves():  # c and m (c1, c2): the channel halves of the [c; m] buffer
        cm = planes(2 * C)
        return cm[:, :C], cm[:, C:]

    def vec(*shape):
        return torch.empty(shape, dtype=dtype)

    cases = []

    def add(name, call, expect):
        cases.append(Case(name, dtype, layout, call, expect))

    for peep in (False, True):
        variant = "peephole" if peep else "plain"
        p = vec(3, C) if peep else None
        add(f"convlstm_gates.forward {variant}",
            lambda launch, p=p: convlstm_gates.forward(launch, planes(4 * C), planes(C), p, 1.0),
            {"convlstm_gates._forward_kernel": 1})
        add(f"convlstm_gates.backward {variant}",
            lambda launch, p=p: convlstm_gates.backward(
                launch, planes(C), planes(C), planes(4 * C), planes(C), planes(C), p),
            {"convlstm_gates._backward_kernel": 1})
    for deltas in (False, True):
        variant = "deltas" if deltas else "plain"
        add(f"dual_memory_gates.stlstm_forward {variant}",
            lambda launch, d=deltas: dual_memory_gates.stlstm_forward(
                launch, planes(7 * C), planes(4 * C), planes(3 * C), *halves(), d),
            {"dual_memory_gates._stlstm_forward_kernel": 1})
        add(f"dual_memory_gates.stlstm_backward {variant}",
            lambda launch, d=deltas: dual_memory_gates.stlstm_backward(
                launch, planes(2 * C), planes(C), planes(2 * C) if d else None, planes(6 * C),
                *halves()),
            {"dual_memory_gates._stlstm_backward_kernel": 1})
    add("dual_memory_gates.mklstm_forward",
        lambda launch: dual_memory_gates.mklstm_forward(
            launch, planes(4 * C), planes(4 * C), *halves()),
        {"dual_memory_gates._mklstm_forward_kernel": 1})
    add("dual_memory_gates.mklstm_backward",
        lambda launch: dual_memory_gates.mklstm_backward(
            launch, planes(2 * C), planes(C), planes(6 * C), *halves()),
        {"dual_memory_gates._mklstm_backward_kernel": 1})
    add("output_gate.forward",
        lambda launch: output_gate.forward(launch, planes(C), planes(C), planes(C)),
        {"output_gate._forward_kernel": 1})
    add("output_gate.backward",
        lambda launch: output_gate.backward(launch, planes(C), planes(2 * C)),
        {"output_gate._backward_kernel": 1})
    # PredRNN++: the causal LSTM's three stages (c read as a channel slice, as the cell's m
    # is one of its [c; m] buffer) and the gradient highway unit
    add("causal_lstm_gates.c_forward",
        lambda launch: causal_lstm_gates.c_forward(
            launch, planes(7 * C), planes(4 * C), planes(3 * C), planes(3 * C), halves()[0],
            1.0),
        {"causal_lstm_gates._c_forward_kernel": 1})
    add("causal_lstm_gates.c_backward",
        lambda launch: causal_lstm_gates.c_backward(
            launch, planes(C), planes(C), planes(4 * C), planes(3 * C), halves()[0]),
        {"causal_lstm_gates._c_backward_kernel": 1})
    add("causal_lstm_gates.m_forward",
        lambda launch: causal_lstm_gates.m_forward(
            launch, planes(4 * C), planes(4 * C), planes(C), planes(C), 1.0),
        {"causal_lstm_gates._m_forward_kernel": 1})
    add("causal_lstm_gates.m_backward",
        lambda launch: causal_lstm_gates.m_backward(
            launch, halves()[1], planes(C), planes(4 * C)),
        {"causal_lstm_gates._m_backward_kernel": 1})
    add("causal_lstm_gates.output_forward",
        lambda launch: causal_lstm_gates.output_forward(launch, planes(C), planes(C), planes(C)),
        {"causal_lstm_gates._output_forward_kernel": 1})
    add("causal_lstm_gates.output_backward",
        lambda launch: causal_lstm_gates.output_backward(launch, planes(C), planes(2 * C)),
        {"causal_lstm_gates._output_backward_kernel": 1})
    add("ghu_gates.forward",
        lambda launch: ghu_gates.forward(launch, planes(2 * C), planes(2 * C), planes(C)),
        {"ghu_gates._forward_kernel": 1})
    add("ghu_gates.backward",
        lambda launch: ghu_gates.backward(launch, planes(C), planes(2 * C), planes(C)),
        {"ghu_gates._backward_kernel": 1})

    # Conv-TT-LSTM's CTT chain (fastcells.ops.ctt: history M states, N levels, rank R).
    # N3M3 (the cell's defaults, D = 1): forward one conv_sum per level; backward 2 output
    # gradient launches, 3 history gradients (one source each), 3 weight gradients.
    # N2M6 (D = 5: more sources than MAX_SOURCES = 4, so two launches per level, the second
    # adding the first's float scratch): forward 2 + 2; backward 1 output gradient and 6
    # history gradients (1 or 2 sources), 2 + 2 weight gradients.
    counts = {"N3M3": ((3,), (5, 3)), "N2M6": ((4,), (7, 4))}
    for config, sizes in CTT.items():
        if config != "N3M3" and (dtype == torch.float16 or layout != "contiguous"):
            continue  # float16 takes bfloat16's paths, and N3M3 covers channels_last
        n, m = sizes["order"], sizes["steps"]
        d = m - n + 1

        def chain(n=n, m=m, d=d):
            history = [planes(C) for _ in range(m)]
            pw = [vec(RANK, C, CTT_K, CTT_K, d) for _ in range(n)]
            gw = [vec(RANK, RANK, CTT_K, CTT_K) for _ in range(n - 1)]
            return history, pw, [vec(RANK) for _ in range(n)], gw, [vec(RANK) for _ in gw]

        def ctt_forward(launch, chain=chain):
            history, pw, pb, gw, gb = chain()
            return ctt.forward(launch, history, 1, pw, pb, gw, gb)

        def ctt_backward(launch, chain=chain, n=n, m=m):
            history, pw, pb, gw, gb = chain()
            vs = [planes(RANK) for _ in range(n - 1)]
            return ctt.backward(launch, planes(RANK), history, 1, vs, pw, gw, True, True,
                                [True] * m, True)

        (fwd,), (conv, wgrad) = counts[config]
        add(f"ctt.forward {config}", ctt_forward, {"ctt._conv_sum_kernel": fwd})
        add(f"ctt.backward {config}", ctt_backward,
            {"ctt._conv_sum_kernel": conv, "ctt._wgrad_kernel": wgrad})

    # The fused convolution + gates: the cell's step (x and bias) and the sequence layer's
    # (x's projection zx precomputed, with peepholes).
    weight = vec(4 * C, CIN + C, KSIZE, KSIZE)
    add("conv_gates.forward x",
        lambda launch: conv_gates.forward(launch, planes(CIN), planes(C), planes(C), weight,
                                          vec(4 * C), None, None, 1.0),
        {"conv_gates._forward_kernel": 1})
    add("conv_gates.forward zx+peephole",
        lambda launch: conv_gates.forward(launch, None, planes(C), planes(C),
                                          vec(4 * C, C, KSIZE, KSIZE), None, planes(4 * C),
                                          vec(3, C), 1.0),
        {"conv_gates._forward_kernel": 1})
    return cases


# The convolution kernels (ctt, conv_gates) take about twice as long to compile as the
# pointwise ones; float16 and float64 compile them contiguous only. What a layout changes
# (which stride is the constant 1) does not depend on the dtype, and what a dtype changes
# (MMA operands, float64 accumulators) not on the layout; float32 and bfloat16 cover both
# layouts, and every gate kernel runs every dtype in both (its spills are checked).
CONVOLUTIONS = ("ctt.", "conv_gates.")


def wanted(name: str, dtype: torch.dtype, layout: str) -> bool:
    return (not name.startswith(CONVOLUTIONS) or layout == "contiguous"
            or dtype in (torch.float32, torch.bfloat16))


def cases(hidden: int = C) -> list:
    """The launcher calls of every dtype and layout (as :func:`wanted`), C = ``hidden``."""
    return [case for dtype in DTYPES for layout in LAYOUTS
            for case in _cases(dtype, layout, hidden) if wanted(case.name, dtype, layout)]


CASES = cases()


# ------------------------------------------------------------------- a kernel of each kind
@triton.jit
def _kinds_kernel(x64, y16, out, scale, one, n16, n, big, flag, nothing,
                  ACC: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    mask = i < n
    v = tl.load(x64 + i * one, mask=mask, other=0.0).to(ACC) * scale
    v += tl.load(y16 + i, mask=mask, other=0.0).to(ACC)
    if flag:
        v += n16
    if nothing is None:
        v += (big // 3).to(ACC)
    tl.store(out + i, v.to(out.dtype.element_ty), mask=mask)


def argument_kinds() -> dict:
    """Specializes and compiles :func:`_kinds_kernel` with an argument of every kind the
    launchers pass (and bools, None, a 64-bit int); returns its signature and constants."""
    args = (torch.empty(64, dtype=torch.float64), torch.empty(64, dtype=torch.float16),
            torch.empty(64, dtype=torch.bfloat16), 0.5, 1, 48, 37, 2 ** 40, True, None)
    spec = specialize(_kinds_kernel, args, dict(ACC=tl.float64, BLOCK=64, num_warps=2,
                                                num_stages=2))
    compiled = compile_for_sm90(_kinds_kernel, spec=spec)
    names = _kinds_kernel.arg_names
    return {"signature": spec.signature,
            "constexprs": {names[k[0]]: str(v) for k, v in spec.constexprs.items()},
            "divisible": sorted(names[k[0]] for k, v in spec.attrs.items()
                                if ["tt.divisibility", 16] in v),
            "num_warps": compiled.metadata.num_warps,
            "num_stages": compiled.metadata.num_stages}


# --------------------------------------------------------------------------------- main
def capture_all(cases) -> tuple[dict, list]:
    """Runs every case's launcher with a Capture. Returns the launches de-duplicated over
    all cases, ``{(kernel, key): (case, Launch)}`` (the first case of each), and a list of
    errors: launch counts other than the cases' ``expect``, and launches that took an
    interpreter workaround (``INTERP_BF16``), which a GPU launch never does."""
    unique, errors = {}, []
    for case in cases:
        capture = Capture()
        case.call(capture)
        if capture.counts() != case.expect:
            errors.append(f"{case.label}: launched {capture.counts()}, expected {case.expect}")
        if any(launch.kwargs.get("INTERP_BF16") for launch in capture.launches):
            errors.append(f"{case.label}: launched with INTERP_BF16=True outside the "
                          f"interpreter")
        for key, launch in capture.unique().items():
            unique.setdefault(key, (case, launch))
    return unique, errors


def _meta(launch) -> str:
    """The launch's constexpr keywords that tell its variants apart (not tile sizes)."""
    skip = ("ACC", "DOT", "PREC", "PRECISION", "INTERP_BF16", "num_warps", "num_stages")
    return " ".join(f"{k}={int(v) if isinstance(v, bool) else v}"
                    for k, v in launch.kwargs.items()
                    if k not in skip and not k.startswith("BLOCK"))


def compile_all(unique: dict, shard: int = 0, shards: int = 1) -> list:
    """Compiles every ``shards``-th specialization from ``shard``; one result per
    specialization: its kernel, first case, compile seconds, resources or error text."""
    results = []
    for n, ((name, key), (case, launch)) in enumerate(unique.items()):
        if n % shards != shard:
            continue
        row = {"kernel": name, "case": case.name, "dtype": DTYPES[case.dtype],
               "layout": case.layout, "meta": _meta(launch),
               "num_warps": launch.specialization.options.num_warps}
        start = time.perf_counter()
        try:
            compiled = compile_for_sm90(launch.kernel, spec=launch.specialization)
            row.update(resource_usage(compiled), ok=True)
        except Exception as e:  # reported; the test decides which failures are expected
            row.update(ok=False, error=f"{type(e).__name__}: {e}")
        row["seconds"] = round(time.perf_counter() - start, 2)
        results.append(row)
    return results


def table(results) -> str:
    lines = [f"{'kernel':41} {'dtype':5} {'layout':13} {'warps':>5} {'REG':>4} {'STACK':>5} "
             f"{'SHARED':>6} {'s':>5}  first case: variant"]
    for r in sorted(results, key=lambda r: (r["kernel"], r["case"], r["meta"], r["dtype"],
                                            r["layout"], r.get("REG", 0))):
        if r["ok"]:
            usage = f"{r['REG']:>4} {r['STACK']:>5} {r['SHARED']:>6}"
        else:
            usage = f"{'FAILED':>17}"
        lines.append(f"{r['kernel']:41} {r['dtype']:5} {r['layout']:13} {r['num_warps']:>5} "
                     f"{usage} {r['seconds']:>5}  {r['case']}: {r['meta']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="cases whose name starts with this")
    parser.add_argument("--shard", default="0/1", help="i/n: compile every n-th from i")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--hidden", type=int, default=C, help="C of the cases (default 32)")
    opts = parser.parse_args(argv)
    shard, shards = map(int, opts.shard.split("/"))
    start = time.perf_counter()
    cases = [case for case in (CASES if opts.hidden == C else globals()["cases"](opts.hidden))
             if case.name.startswith(opts.only)]
    unique, capture_errors = capture_all(cases)
    captured = time.perf_counter() - start
    results = compile_all(unique, shard, shards)
    out = {"cases": len(cases), "launches": len(unique), "capture_errors": capture_errors,
           "results": results, "capture_seconds": round(captured, 2),
           "seconds": round(time.perf_counter() - start, 2)}
    if shard == 0 and not opts.only:
        out["kinds"] = argument_kinds()
    print(table(results), flush=True)
    print(f"{len(cases)} cases, {len(unique)} specializations, {len(results)} compiled here "
          f"({sum(not r['ok'] for r in results)} failed) in {out['seconds']} s", flush=True)
    for error in capture_errors:
        print("capture:", error, flush=True)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 1 if capture_errors or not all(r["ok"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
