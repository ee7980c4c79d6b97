"""CPU benchmarks of the cells: fused (cpp) vs reference, time and saved-for-backward memory.

    python -m fastcells.bench            # the full table at B=4, Cin=C=32, 64x64
    python -m fastcells.bench --quick    # a smaller, faster run (the README demo)

Timings are medians of interleaved repeats: every candidate of a row runs in turn, so the
ratios are measured side by side and machine noise hits all of them alike. The same
functions back the pytest-benchmark suite in ``benchmarks/``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

import fastcells as fc
from fastcells import _ext
from fastcells.ops import GATES
from fastcells.utils import saved_tensor_bytes

CELLS = {
    "convlstm": (fc.ConvLSTMCell, fc.ConvLSTM, {}),
    "stlstm": (fc.SpatioTemporalLSTMCell, fc.SpatioTemporalLSTM, {}),
    "mklstm": (fc.MKLSTMCell, fc.MKLSTM, {}),
    "convttlstm": (fc.ConvTTLSTMCell, fc.ConvTTLSTM, {}),
}


@dataclass
class Size:
    batch: int = 4
    channels: int = 32
    height: int = 64
    width: int = 64


# ------------------------------------------------------------------------------ workloads
def gate_workload(cell: str, backend: str, size: Size) -> Callable[[], None]:
    """Forward + backward of a cell's gate math alone (all its pointwise stages)."""
    B, C, H, W = size.batch, size.channels, size.height, size.width
    g = GATES[backend]

    def t(k):
        return torch.randn(B, k * C, H, W, requires_grad=True)

    if cell in ("convlstm", "convttlstm"):
        inputs = [t(4), t(1)]

        def run():
            return g.convlstm(inputs[0], inputs[1], None, 0.0)
    elif cell == "stlstm":
        inputs = [t(7), t(4), t(3), t(1), t(1), t(1), t(1)]

        def run():
            zx, zh, zm, c, m, zo, zl = inputs
            c, m, _, o_partial, _ = g.stlstm(zx, zh, zm, c, m)
            return g.output(o_partial, zo, zl), c, m
    elif cell == "mklstm":
        inputs = [t(4), t(4), t(1), t(1), t(1), t(1)]

        def run():
            z1, z2, c1, c2, zo, zl = inputs
            c1, c2, _, o_partial = g.mklstm(z1, z2, c1, c2)
            return g.output(o_partial, zo, zl), c1, c2
    else:
        raise ValueError(cell)
    grads = [torch.randn(B, C, H, W) for _ in range(3)]

    def step():
        outs = run()
        torch.autograd.grad(outs, inputs, grads[: len(outs)])

    return step


def _random_state(cell_module, B, H, W):
    shape = (B, cell_module.hidden_size, H, W)
    if isinstance(cell_module, fc.ConvTTLSTMCell):
        hist = tuple(torch.randn(shape, requires_grad=True) for _ in range(cell_module.steps))
        return (hist[-1], torch.randn(shape, requires_grad=True), hist), [hist[0], hist[1]]
    st = tuple(torch.randn(shape, requires_grad=True) for _ in cell_module.state_names)
    return st, list(st)


def step_workload(cell: str, backend: str, size: Size, memory_efficient=False):
    """One full cell step (convolutions + gates), forward + backward, from a random state."""
    cls = CELLS[cell][0]
    torch.manual_seed(0)
    module = cls(size.channels, size.channels, backend=backend,
                 memory_efficient=memory_efficient)
    x = torch.randn(size.batch, size.channels, size.height, size.width, requires_grad=True)
    state, leaves = _random_state(module, size.batch, size.height, size.width)
    wrt = [x, *leaves, *module.parameters()]

    def step():
        out = module(x, state)
        torch.autograd.grad(out[0].sum(), wrt, allow_unused=True)

    return step


def sequence_workload(cell: str, backend: str, size: Size, memory_efficient=False,
                      layers: int = 2, steps: int = 6):
    """A 2-layer stack over 6 frames, forward + backward to the parameters (a training step's
    recurrent part: the frames themselves need no gradient)."""
    layer_cls = CELLS[cell][1]
    torch.manual_seed(0)
    layer = layer_cls(size.channels, size.channels, num_layers=layers, backend=backend,
                      memory_efficient=memory_efficient)
    x = torch.randn(size.batch, steps, size.channels, size.height, size.width)
    params = list(layer.parameters())

    def step():
        out, _ = layer(x)
        torch.autograd.grad(out.sum(), params, allow_unused=True)

    return step


def stack_saved_bytes(cell: str, backend: str, size: Size, memory_efficient=False,
                      layers: int = 2, steps: int = 6) -> int:
    """Saved-for-backward bytes of a 2-layer stack unrolled over 6 steps (params excluded)."""
    layer_cls = CELLS[cell][1]
    torch.manual_seed(0)
    layer = layer_cls(size.channels, size.channels, num_layers=layers, backend=backend,
                      memory_efficient=memory_efficient)
    x = torch.randn(size.batch, steps, size.channels, size.height, size.width)
    return saved_tensor_bytes(lambda: layer(x), exclude=layer.parameters())


# ------------------------------------------------------------------------------ timing
def time_side_by_side(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 2
                      ) -> dict[str, dict[str, float]]:
    """Seconds per call of each fn, measured round-robin (side by side): median and min.

    On a shared machine noise only ever adds time, so the min shows what the code can do
    and the median what a user typically sees; both are reported.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    return {k: {"median": statistics.median(v), "min": min(v)} for k, v in samples.items()}


def machine_info() -> dict:
    return {
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ------------------------------------------------------------------------------ report
def run(size: Size, repeats: int, cells=tuple(CELLS), progress=print) -> dict:
    if not _ext.cpp_available():
        raise SystemExit(_ext.BUILD_HINT)
    rows = []
    for cell in cells:
        progress(f"  {cell}: gate math ...")
        gates = time_side_by_side({b: gate_workload(cell, b, size)
                                   for b in ("reference", "cpp")}, repeats * 3)
        progress(f"  {cell}: cell step ...")
        steps = time_side_by_side({
            "reference": step_workload(cell, "reference", size),
            "cpp": step_workload(cell, "cpp", size),
            "cpp_memeff": step_workload(cell, "cpp", size, memory_efficient=True),
        }, repeats)
        progress(f"  {cell}: 2-layer sequence ...")
        seq = time_side_by_side({
            "reference": sequence_workload(cell, "reference", size),
            "cpp": sequence_workload(cell, "cpp", size),
            "cpp_memeff": sequence_workload(cell, "cpp", size, memory_efficient=True),
        }, max(3, repeats // 3), warmup=1)
        progress(f"  {cell}: saved-for-backward bytes ...")
        mem = {name: stack_saved_bytes(cell, b, size, me) for name, b, me in
               [("reference", "reference", False), ("cpp", "cpp", False),
                ("cpp_memeff", "cpp", True)]}
        rows.append({"cell": cell, "gates_s": gates, "step_s": steps, "sequence_s": seq,
                     "saved_bytes": mem})
    return {"size": size.__dict__, "repeats": repeats, "machine": machine_info(), "rows": rows}


def format_table(result: dict) -> str:
    s = result["size"]
    lines = [
        f"fastcells CPU benchmark: B={s['batch']}, Cin=C={s['channels']}, "
        f"{s['height']}x{s['width']}, fp32, {result['machine']['threads']} threads, "
        f"{result['machine']['processor']}",
        "",
        "| cell | gates ref (ms) | gates cpp (ms) | gates speedup (min) | step ref (ms) "
        "| step cpp (ms) | step speedup (min) | ceiling | memeff step / cpp step "
        "| saved cpp / ref | saved memeff / ref |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        g, st, m = r["gates_s"], r["step_s"], r["saved_bytes"]
        lines.append(
            f"| {r['cell']} | {_ms(g['reference'])} | {_ms(g['cpp'])} "
            f"| {_ratio(g, 'reference', 'cpp')} | {_ms(st['reference'])} | {_ms(st['cpp'])} "
            f"| {_ratio(st, 'reference', 'cpp')} "
            f"| {_ceiling(st['reference']['median'], g['reference']['median']):.2f}x "
            f"| {st['cpp_memeff']['median'] / st['cpp']['median']:.2f}x "
            f"| {m['cpp'] / m['reference']:.2f} | {m['cpp_memeff'] / m['reference']:.2f} |")
    lines += ["", "| cell | sequence ref (ms) | sequence cpp (ms) | speedup "
              "| memeff sequence (ms) | memeff / cpp |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        q = r["sequence_s"]
        lines.append(f"| {r['cell']} | {_ms(q['reference'])} | {_ms(q['cpp'])} "
                     f"| {_ratio(q, 'reference', 'cpp')} | {_ms(q['cpp_memeff'])} "
                     f"| {q['cpp_memeff']['median'] / q['cpp']['median']:.2f}x |")
    lines += ["", "Times are medians of interleaved repeats; speedups are median ratios with the "
              "ratio of minima in parentheses (noise on a shared machine only adds time).",
              "", "gates: fwd+bwd of the pointwise gate math alone; step: one cell step "
              "(convolutions + gates) fwd+bwd from a random state; ceiling: the step speedup "
              "if the gate math cost nothing (reference step / (reference step - reference "
              "gates)), i.e. what fusing gates alone can give while convolutions stay on ATen; "
              "saved: bytes autograd keeps for a 2-layer stack unrolled over 6 steps (unique "
              "storages, parameters excluded); sequence: that stack over 6 frames, fwd+bwd "
              "to the parameters."]
    return "\n".join(lines)


def _ms(t: dict) -> str:
    ms = t["median"] * 1e3
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _ratio(t: dict, slow: str, fast: str) -> str:
    return (f"{t[slow]['median'] / t[fast]['median']:.2f}x "
            f"({t[slow]['min'] / t[fast]['min']:.2f}x)")


def _ceiling(step: float, gates: float) -> float:
    return step / max(step - gates, 1e-12)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    p.add_argument("--size", type=int, nargs=4, metavar=("B", "C", "H", "W"))
    p.add_argument("--repeats", type=int)
    p.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    p.add_argument("--json", help="also write the results as JSON to this path")
    p.add_argument("--markdown", help="also write the table as Markdown to this path")
    args = p.parse_args(argv)
    size = Size(*args.size) if args.size else (Size(2, 16, 32, 32) if args.quick else Size())
    repeats = args.repeats or (5 if args.quick else 15)
    print(f"measuring {', '.join(args.cells)} ({repeats} interleaved repeats each) ...")
    result = run(size, repeats, args.cells)
    table = format_table(result)
    print()
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
