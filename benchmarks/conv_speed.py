"""CPU convolution algorithms (issue 16): per-shape timings of every algorithm, the choices
``"auto"`` makes, and the issue's step and rollout targets side by side.

    python benchmarks/conv_speed.py [--quick] [--sections convs steps rollout]
                                    [--sizes small wide openstl] [--threads N]
                                    [--budget S] [--json F] [--markdown F]

Sections:

- ``convs``: each convolution shape of the issue's table (and of the three target sizes),
  forward / data gradient / weight gradient, every algorithm forced in turn
  (:data:`fastcells.ops.conv.ALGORITHMS`), side by side (interleaved medians, ms), with the
  relative error against a float64 oneDNN result; plus the weight gradient of a 10-step
  sequence as one (B*T)-frame product against 10 per-step ones.
- ``steps``: one cell step forward + backward (input needing a gradient) for the four cells
  at the target sizes: reference, ``cpp`` with the convolutions on oneDNN (fastcells before
  issue 16), ``cpp`` with every pass on our Winograd (oneDNN where it does not apply) and
  ``cpp`` with ``"auto"``; ratios against the reference, side by side.
- ``rollout``: a 2-layer stack over 10 frames without gradient (inference), same variants.

Target sizes (issue 16): small B=4, C=32, 64x64, kernel 3; wide B=4, C=64, 64x64, kernel 5
(MK-LSTM keeps its 3 and 5); openstl B=16, C=128, 16x16, kernel 5. The load average at the
start and end is printed with the tables: on a shared machine the ratios are not evidence.
The training targets are measured by ``python -m fastcells.bench train`` (see the report).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastcells as fc  # noqa: E402
from fastcells.bench import machine_info, time_side_by_side  # noqa: E402
from fastcells.ops import conv as C  # noqa: E402

# (B, C, kernel, H=W) per target size
SIZES = {"small": (4, 32, 3, 64), "wide": (4, 64, 5, 64), "openstl": (16, 128, 5, 16)}
QUICK_SIZES = {"quick": (2, 8, 3, 16), "quick_k5": (2, 8, 5, 8)}
# (B, Cin, Cout, k, H=W): the issue's table
ISSUE_CONVS = [(4, 64, 128, 3, 64), (4, 64, 128, 5, 64), (4, 64, 448, 5, 64),
               (16, 128, 896, 5, 16), (16, 128, 256, 3, 64), (4, 1, 128, 3, 64)]
QUICK_CONVS = [(2, 8, 16, 3, 12), (2, 1, 16, 5, 9)]
SEQ_STEPS = 10


def _rel(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def conv_rows(shapes, budget: float) -> list[dict]:
    """Every algorithm of every pass on each shape, forced, side by side."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    for b, cin, cout, k, hw in shapes:
        pad = (k // 2, k // 2)
        x = torch.randn(b, cin, hw, hw, generator=gen)
        w = torch.randn(cout, cin, k, k, generator=gen) / (cin * k * k) ** 0.5
        g = torch.randn(b, cout, hw, hw, generator=gen)
        args = {"forward": (x, w, None, pad), "input": (x.shape, w, g, pad),
                "weight": (x, w.shape, g, pad)}
        for pass_, algos in C.ALGORITHMS.items():
            exact = C.IMPLEMENTATIONS[pass_]["onednn"](
                *(a.double() if torch.is_tensor(a) else a for a in args[pass_]))
            fns, errors, skipped = {}, {}, {}
            for algo in algos:
                why = None if algo == "onednn" else C._not_applicable(algo, x, w, pad,
                                                                      (hw, hw))
                if why:
                    skipped[algo] = why
                    continue
                fn = C.IMPLEMENTATIONS[pass_][algo]
                fns[algo] = (lambda fn=fn, a=args[pass_]: fn(*a))
                errors[algo] = _rel(fns[algo](), exact)
            times = time_side_by_side(fns, budget_s=budget)
            rows.append({"shape": (b, cin, cout, k, hw), "pass": pass_,
                         "ms": {a: t["median"] * 1e3 for a, t in times.items()},
                         "min_ms": {a: t["min"] * 1e3 for a, t in times.items()},
                         "error": errors, "skipped": skipped})
        # the weight gradient of a sequence: T per-step products against one over B*T frames
        xs = torch.randn(SEQ_STEPS * b, cin, hw, hw, generator=gen)
        gs = torch.randn(SEQ_STEPS * b, cout, hw, hw, generator=gen)
        fns = {}
        for algo in ("onednn", "winograd"):
            if algo == "winograd" and C._not_applicable(algo, x, w, pad, (hw, hw)):
                continue
            fn = C.IMPLEMENTATIONS["weight"][algo]
            fns[f"{algo} per step"] = (lambda fn=fn: sum(
                fn(xs[i * b:(i + 1) * b], w.shape, gs[i * b:(i + 1) * b], pad)
                for i in range(SEQ_STEPS)))
            fns[f"{algo} batched"] = (lambda fn=fn: fn(xs, w.shape, gs, pad))
        times = time_side_by_side(fns, budget_s=budget)
        rows.append({"shape": (b, cin, cout, k, hw), "pass": f"weight x{SEQ_STEPS} steps",
                     "ms": {a: t["median"] * 1e3 for a, t in times.items()},
                     "min_ms": {a: t["min"] * 1e3 for a, t in times.items()},
                     "error": {}, "skipped": {}})
    return rows


def _cell(name: str, channels: int, k: int, backend: str):
    torch.manual_seed(0)
    if name == "mklstm":
        return fc.MKLSTMCell(channels, channels, backend=backend)
    cls = {"convlstm": fc.ConvLSTMCell, "stlstm": fc.SpatioTemporalLSTMCell,
           "convttlstm": fc.ConvTTLSTMCell}[name]
    return cls(channels, channels, kernel_size=k, backend=backend)


def _layer(name: str, channels: int, k: int, backend: str):
    torch.manual_seed(0)
    if name == "mklstm":
        return fc.MKLSTM(channels, channels, num_layers=2, backend=backend)
    cls = {"convlstm": fc.ConvLSTM, "stlstm": fc.SpatioTemporalLSTM,
           "convttlstm": fc.ConvTTLSTM}[name]
    return cls(channels, channels, kernel_size=k, num_layers=2, backend=backend)


VARIANTS = {"reference": ("reference", "onednn"), "cpp/onednn": ("cpp", "onednn"),
            "cpp/winograd": ("cpp", "winograd"), "cpp/winograd8": ("cpp", "winograd8"),
            "cpp/auto": ("cpp", "auto")}


def _with(setting: str, fn):
    def run():
        with fc.conv_algorithm(setting):
            return fn()
    return run


def step_rows(sizes: dict, budget: float) -> list[dict]:
    rows = []
    for size, (b, ch, k, hw) in sizes.items():
        for name in ("convlstm", "stlstm", "mklstm", "convttlstm"):
            gen = torch.Generator().manual_seed(1)
            x = torch.randn(b, ch, hw, hw, generator=gen).requires_grad_()
            fns = {}
            for variant, (backend, setting) in VARIANTS.items():
                cell = _cell(name, ch, k, backend)
                state = cell.init_state(x)
                state = tuple(tuple(torch.randn(s.shape, generator=gen) for s in t)
                              if isinstance(t, tuple) else torch.randn(t.shape, generator=gen)
                              for t in state)
                params = list(cell.parameters())

                def step(cell=cell, state=state, params=params):
                    out = cell(x, state)
                    torch.autograd.grad(out[0], [x, *params], torch.ones_like(out[0]),
                                        allow_unused=True)
                fns[variant] = _with(setting, step)
            times = time_side_by_side(fns, budget_s=budget)
            rows.append(_ratio_row("step fwd+bwd", size, name, times))
    return rows


def rollout_rows(sizes: dict, budget: float, frames: int = 10) -> list[dict]:
    rows = []
    for size, (b, ch, k, hw) in sizes.items():
        x = torch.randn(b, frames, ch, hw, hw, generator=torch.Generator().manual_seed(2))
        for name in ("convlstm", "stlstm", "mklstm", "convttlstm"):
            fns = {}
            for variant, (backend, setting) in VARIANTS.items():
                layer = _layer(name, ch, k, backend)

                def rollout(layer=layer):
                    with torch.no_grad():
                        layer(x)
                fns[variant] = _with(setting, rollout)
            times = time_side_by_side(fns, budget_s=budget)
            rows.append(_ratio_row(f"rollout {frames} frames, 2 layers, no grad", size, name,
                                   times))
    return rows


def _ratio_row(what: str, size: str, cell: str, times: dict) -> dict:
    ref = times["reference"]["median"]
    return {"what": what, "size": size, "cell": cell,
            "ms": {v: t["median"] * 1e3 for v, t in times.items()},
            "speedup": {v: ref / t["median"] for v, t in times.items() if v != "reference"}}


def choices_table() -> str:
    lines = ["| input | layout | weight | pass | chosen | ms per candidate | rejected | "
             "oneDNN kept because |", "|---|---|---|---|---|---|---|---|"]
    for key, passes in fc.conv_algorithm_cache().items():
        for pass_, c in passes.items():
            ms = ", ".join(f"{a} {v:.1f}" for a, v in sorted(c["ms"].items(), key=lambda i: i[1]))
            rej = "; ".join(f"{a}: {r}" for a, r in c["rejected"].items())
            lines.append(f"| {key.input} | {key.layout} | {key.weight} | {pass_} | "
                         f"{c['algorithm']} | {ms} | {rej} | {c['kept']} |")
    return "\n".join(lines)


def format_report(result: dict) -> str:
    info = result["machine"]
    out = [f"# CPU convolution algorithms ({info['processor']}, {info['threads']} torch "
           f"threads, torch {info['torch']}, load average at start {result['load_start']}, "
           f"at end {info['load_average']})", ""]
    if result.get("convs"):
        out += ["## Every algorithm per shape (median ms; relative error against float64)", "",
                "| B, Cin -> Cout, k, H=W | pass | " + " | ".join(
                    ["candidates"]) + " |", "|---|---|---|"]
        for r in result["convs"]:
            cand = ", ".join(f"{a} {v:.1f}" + (f" ({r['error'][a]:.0e})" if a in r["error"]
                                               else "")
                             for a, v in sorted(r["ms"].items(), key=lambda i: i[1]))
            b, cin, cout, k, hw = r["shape"]
            out.append(f"| {b}, {cin} -> {cout}, k{k}, {hw} | {r['pass']} | {cand} |")
        out.append("")
    for section in ("steps", "rollout"):
        if not result.get(section):
            continue
        variants = list(result[section][0]["ms"])
        fused = [v for v in variants if v != "reference"]
        out += [f"## {result[section][0]['what']}: median ms, speedup vs reference", "",
                "| size | cell | " + " | ".join(variants) + " | "
                + " | ".join(f"{v} x" for v in fused) + " |",
                "|---|---|" + "---|" * (len(variants) + len(fused))]
        for r in result[section]:
            ms, sp = r["ms"], r["speedup"]
            out.append(f"| {r['size']} | {r['cell']} | "
                       + " | ".join(f"{ms[v]:.1f}" for v in variants) + " | "
                       + " | ".join(f"{sp[v]:.2f}" for v in fused) + " |")
        out.append("")
    out += ["## The choices of `auto` (fastcells.conv_algorithm_cache())", "",
            result["choices"], ""]
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes: a smoke run (~1 min)")
    p.add_argument("--sections", nargs="+", default=["convs", "steps", "rollout"],
                   choices=["convs", "steps", "rollout"])
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--budget", type=float, help="seconds of timing per row (default 10, "
                                                "0.3 with --quick)")
    p.add_argument("--json")
    p.add_argument("--markdown")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = args.budget or (0.3 if args.quick else 10.0)
    sizes = QUICK_SIZES if args.quick else {s: SIZES[s] for s in args.sizes}
    shapes = QUICK_CONVS if args.quick else ISSUE_CONVS + sorted(
        {(b, ch, 4 * ch, k, hw) for b, ch, k, hw in sizes.values()})
    load_start = machine_info()["load_average"]
    fc.clear_conv_algorithm_cache()
    result = {"load_start": load_start, "budget_s": budget}
    if "convs" in args.sections:
        result["convs"] = conv_rows(shapes, budget)
    if "steps" in args.sections:
        result["steps"] = step_rows(sizes, budget)
    if "rollout" in args.sections:
        result["rollout"] = rollout_rows(sizes, budget)
    result["choices"] = choices_table()
    result["machine"] = machine_info()
    report = format_report(result)
    print(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
