"""Kernel and cell-step tables: every variant side by side, with floors and saved bytes.

One *row* is a (dtype, size, cell, kernel, mode) with the median time of every variant
(``workloads`` explains the variants), the floor of the work (``floors``) and each
variant's fraction of it. One *memory* entry per (dtype, size, cell) holds the bytes
autograd saves for one step and for a 2-layer stack over 6 frames, and on a GPU the peak
memory of one step forward + backward.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

import torch

from . import floors, timing, workloads
from .targets import check_kernel_targets
from .workloads import MODES, Size, dtype_name

KINDS = ("gates", "step")
SCHEMA = 2


@dataclass
class KernelConfig:
    """What :func:`run_kernels` measures (the ``kernels`` command's options)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtypes: tuple = (torch.float32,)
    sizes: dict = field(default_factory=lambda: dict(workloads.SIZES))
    cells: tuple = tuple(workloads.CELLS)
    kinds: tuple = KINDS
    modes: tuple = MODES
    variants: tuple | None = None  # None: every variant available
    compile: bool = True
    compile_backend: str = "inductor"
    repeats: int | None = None  # None: as many as fit in budget_s per row
    budget_s: float = 10.0
    warmup: int = 2
    stack_memory: bool = True
    quick: bool = False
    interpreter: bool = False  # also time Triton in its CPU interpreter (dry runs only)


def _variants(cfg: KernelConfig, kind: str, cell: str, dtype) -> list[str]:
    pick = workloads.gate_variants if kind == "gates" else workloads.step_variants
    found = pick(cell, cfg.device, dtype, cfg.interpreter)
    if not cfg.compile:
        found = [v for v in found if v != "compiled"]
    if cfg.variants is not None:
        found = [v for v in found if v in cfg.variants]
    return found


def _plan(cfg: KernelConfig) -> list[tuple]:
    return [(dtype, name, size, cell, kind) for dtype in cfg.dtypes
            for name, size in cfg.sizes.items() for cell in cfg.cells for kind in cfg.kinds]


def _config_dict(cfg: KernelConfig) -> dict:
    return {"sizes": {k: v.as_dict() for k, v in cfg.sizes.items()},
            "dtypes": [dtype_name(d) for d in cfg.dtypes], "cells": list(cfg.cells),
            "kinds": list(cfg.kinds), "modes": list(cfg.modes),
            "compile": cfg.compile, "compile_backend": cfg.compile_backend,
            "repeats": cfg.repeats, "budget_s": cfg.budget_s, "warmup": cfg.warmup}


def run_kernels(cfg: KernelConfig, progress: bool = True, emit=None) -> dict:
    """Measures every row of ``cfg``; returns the JSON-ready result.

    ``emit(kind, record)``, when given, receives the run's parts as they are measured:
    ``("start", {machine, roofs, config})``, then each ``("row", row)`` and
    ``("memory", entry)``, so that a run stopped part-way (benchmarks/gpu_suite.py kills a
    step at its deadline) still leaves every finished row; :func:`assemble` rebuilds the
    result from them."""
    from tqdm.auto import tqdm

    device = cfg.device
    started = time.time()
    info = timing.machine_info(device)
    roofs = {dtype_name(d): timing.measure_roofs(device, d, quick=cfg.quick) for d in cfg.dtypes}
    if emit:
        emit("start", {"device": device.type, "quick": cfg.quick, "machine": info,
                       "roofs": roofs, "config": _config_dict(cfg)})
    rows, memory = [], []
    plan = _plan(cfg)
    bar = tqdm(plan, desc="kernels", disable=not progress, leave=False)
    for dtype, size_name, size, cell, kind in bar:
        bar.set_postfix_str(f"{dtype_name(dtype)} {size_name} {cell} {kind}")
        variants = _variants(cfg, kind, cell, dtype)
        if not variants:
            continue
        torch._dynamo.reset()  # fresh compile caches: one static-shape graph per row
        make = workloads.gate_workload if kind == "gates" else workloads.step_workload
        loads = {v: make(cell, v, size, device, dtype, cfg.compile_backend) for v in variants}
        compile_s = None
        if "compiled" in loads:  # the first call compiles forward and backward graphs
            compile_s = timing.measure_once(loads["compiled"].fn("fwd+bwd"), device)
        floor = floors.floor_seconds(kind, cell, size, dtype, roofs[dtype_name(dtype)])
        for mode in cfg.modes:
            times = timing.time_side_by_side({v: w.fn(mode) for v, w in loads.items()},
                                             cfg.repeats, cfg.warmup, device, cfg.budget_s)
            rows.append({
                "dtype": dtype_name(dtype), "size": size_name, "shape": size.as_dict(),
                "cell": cell, "kind": kind, "mode": mode, "times": times,
                "auto": workloads.auto_backend(cell, device, dtype),
                "floor_s": floor[mode], "bytes": floor["bytes"][mode],
                "flops": floor["flops"][mode], "compile_s": compile_s,
                "fraction_of_floor": {v: floor[mode] / t["median"] for v, t in times.items()},
            })
            if emit:
                emit("row", rows[-1])
        if kind == "step":
            memory.append(_memory_entry(cfg, dtype, size_name, size, cell, loads))
            if emit:
                emit("memory", memory[-1])
        del loads
        gc.collect()  # compiled graphs and autograd cycles of the row: free before the next
    bar.close()
    result = assemble({"device": device.type, "quick": cfg.quick, "machine": info,
                       "roofs": roofs, "config": _config_dict(cfg)}, rows, memory)
    result["elapsed_s"] = time.time() - started
    result["machine"]["load_average_end"] = timing.machine_info(device)["load_average"]
    return result


def assemble(start: dict, rows: list, memory: list) -> dict:
    """The result of :func:`run_kernels` from its emitted parts (all of them, or those of a
    run stopped part-way): ceilings and targets are derived from the rows present."""
    rows = [dict(r) for r in rows]
    _add_ceilings(rows)
    result = {"schema": SCHEMA, "what": "kernels", **start, "rows": rows,
              "memory": list(memory)}
    result["machine"] = dict(result["machine"])
    result["targets"] = check_kernel_targets(result)
    return result


def _add_ceilings(rows: list) -> None:
    """Step rows get ``ceiling``: the step speedup if the gate math cost nothing, i.e.
    reference step / (reference step - reference gates) from the same size and mode: what
    fusing the gates alone can give while the convolutions stay as they are (an estimate
    from two separately measured medians)."""
    gates = {(r["dtype"], r["size"], r["cell"], r["mode"]): r for r in rows
             if r["kind"] == "gates"}
    for r in rows:
        g = gates.get((r["dtype"], r["size"], r["cell"], r["mode"]))
        if r["kind"] == "step" and g and "reference" in r["times"] \
                and "reference" in g["times"]:
            step, gate = r["times"]["reference"]["median"], g["times"]["reference"]["median"]
            r["ceiling"] = step / (step - gate) if step > gate else None


def _memory_entry(cfg, dtype, size_name: str, size: Size, cell: str, loads: dict) -> dict:
    device = cfg.device
    eager = [v for v in loads if v != "compiled"]
    entry = {"dtype": dtype_name(dtype), "size": size_name, "cell": cell,
             "auto": workloads.auto_backend(cell, device, dtype),
             "step_saved": {v: loads[v].saved_bytes() for v in eager}}
    if cfg.stack_memory:
        entry["stack_saved"] = {v: workloads.stack_saved_bytes(cell, v, size, device, dtype)
                                for v in eager}
    if device.type == "cuda":
        entry["step_peak"] = {}
        for v, w in loads.items():
            p = timing.peak_cuda_bytes(w.fn("fwd+bwd"), device)
            entry["step_peak"][v] = p["peak"] - p["base"]
    return entry


# ------------------------------------------------------------------------------ Markdown
def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 \
        else f"{ms:.0f}"


def _mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 2**20:.1f}"


def format_kernels(result: dict) -> str:
    """The Markdown report of :func:`run_kernels`'s result."""
    m, cfg = result["machine"], result["config"]
    lines = [f"# fastcells kernel benchmark ({result['device']})", "", _machine_line(m), "",
             *load_warning(m),
             "Roofs measured in this run: " + "; ".join(
                 f"{d}: copy {r['bandwidth'] / 1e9:.1f} GB/s, matmul "
                 f"{r['matmul'] / 1e9:.1f} GFLOP/s{' (TF32)' if r.get('tf32') else ''}"
                 for d, r in result["roofs"].items()), ""]
    if result.get("quick"):
        lines += [("**Quick run** (`--quick`): tiny sizes and few repeats; a smoke test of the "
                  "machinery, not the papers' settings."), ""]
    if not cfg["compile"]:
        lines += [("The `compiled` baseline was not measured (`--no-compile`, the default with "
                  "`--quick`: inductor needs seconds to minutes per graph)."), ""]
    for (dtype, size), rows in _groups(result["rows"]).items():
        shape = Size(**rows[0]["shape"])
        variants = _ordered({v for r in rows for v in r["times"]})
        lines += [f"## {size}: {shape}, {dtype}", "",
                  "| cell | kernel | mode | floor (ms) | " + " | ".join(variants)
                  + " | gate-free ceiling |",
                  "|---|---|---|---|" + "---|" * (len(variants) + 1)]
        for r in rows:
            cells = []
            for v in variants:
                if v not in r["times"]:
                    cells.append("—")
                    continue
                t = r["times"][v]["median"]
                speed = r["times"]["reference"]["median"] / t if "reference" in r["times"] \
                    else None
                cells.append(f"{_ms(t)}" + ("" if v == "reference" or speed is None
                                            else f" ({speed:.2f}x)")
                             + f" {floor_percent(r['fraction_of_floor'][v])}")
            ceiling = f"{r['ceiling']:.2f}x" if r.get("ceiling") else "—"
            lines.append(f"| {r['cell']} | {r['kind']} | {r['mode']} | {_ms(r['floor_s'])} | "
                         + " | ".join(cells) + f" | {ceiling} |")
        lines.append("")
    compiles = sorted(r["compile_s"] for r in result["rows"] if r.get("compile_s") is not None)
    if compiles:
        lines += [(f"Compile time of the `compiled` baseline (first call, forward + backward "
                  f"graphs, excluded above): {compiles[0]:.1f}-{compiles[-1]:.1f} s per "
                  f"graph, median {compiles[len(compiles) // 2]:.1f} s."), ""]
    lines += _memory_table(result["memory"])
    lines += _targets_lines(result.get("targets", []))
    lines += [
        ("Each entry: median ms over interleaved repeats, (speedup over `reference`), and "
        "the floor as a percentage of the time (100% = at the machine's roof). "
        "gates: the cell's pointwise gate math alone; step: one cell step (convolutions + "
        "gates) from a random state, its input needing a gradient. fwd: the forward of a "
        "training step (autograd records the graph); fwd+bwd: forward, then gradients to "
        "every input and parameter. Floors (benchmarks/NOTES.md, fastcells/bench/floors.py):"
        " gate bytes at the copy bandwidth, plus for a step its convolution FLOPs at the "
        "matmul rate. `compiled` = torch.compile(reference), compile time excluded; "
        "`<backend>_memeff` = memory_efficient=True. Gate-free ceiling: the step speedup if "
        "the gate math cost nothing, reference step / (reference step - reference gates): "
        "what fusing the gates alone can give while the convolutions stay as they are."), ""]
    return "\n".join(lines)


def floor_percent(fraction: float) -> str:
    """The floor as a share of the time; above 100% the time is below what the machine can
    do, so the figure is a measurement error (e.g. a kernel timed before its work ended),
    flagged rather than printed as a result."""
    if fraction > 1.0:
        return f"**>100% ({100 * fraction:.0f}%): measurement error**"
    return f"{100 * fraction:.0f}%"


def load_warning(m: dict) -> list[str]:
    """A warning line when the load average exceeded the cores during the run (beyond
    :data:`~fastcells.bench.timing.LOAD_TOLERANCE`)."""
    loads = [x for x in (m.get("load_average"), m.get("load_average_end")) if x]
    peak = max((x[0] for x in loads), default=0.0)
    if timing.overloaded(peak, m.get("cpu_count")):
        return [(f"**Warning: load average {peak:.2f} above the {m.get('cpu_count')} cores: "
                 f"other jobs shared the machine, so these ratios are not trustworthy.**"), ""]
    return []


def _machine_line(m: dict) -> str:
    gpu = f", GPU {m['gpu']} (CUDA {m.get('cuda')})" if m.get("gpu") else ""
    load = m.get("load_average")
    load_s = (f", load average {load[0]:.2f} at start, {m['load_average_end'][0]:.2f} at end"
              if load and m.get("load_average_end") else "")
    threads = f"{m['threads']} torch thread" + ("s" if m["threads"] != 1 else "")
    return (f"{m['processor']} ({m['cpu_count']} CPUs), {threads}{gpu}; "
            f"torch {m['torch']}, triton {m['triton']}, Python {m['python']}; "
            f"{m['date']}, commit {m['commit']}{load_s}.")


def _ordered(variants: set) -> list[str]:
    order = ["reference", "compiled", "cpp", "triton", "cuda"]
    return sorted(variants, key=lambda v: (order.index(v.split("_")[0])
                                           if v.split("_")[0] in order else 99, v))


def _groups(rows: list) -> dict:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["dtype"], r["size"]), []).append(r)
    return groups


def _memory_table(memory: list) -> list[str]:
    if not memory:
        return []
    fused = _ordered({v for e in memory for v in e["step_saved"] if v != "reference"})
    has_stack = any("stack_saved" in e for e in memory)
    has_peak = any("step_peak" in e for e in memory)
    head = "| cell | size | dtype | step: reference (MiB) | " + " | ".join(
        f"step: {v} / ref" for v in fused)
    if has_stack:
        head += " | 2x6 stack: reference (MiB) | " + " | ".join(
            f"stack: {v} / ref" for v in fused)
    peaks = _ordered({v for e in memory for v in e.get("step_peak", {}) if v != "reference"})
    if has_peak:
        head += " | step peak: reference (MiB) | " + " | ".join(f"peak: {v} / ref"
                                                                for v in peaks)
    lines = ["## Saved for backward", "", head + " |",
             "|" + "---|" * (head.count("|"))]
    for e in memory:
        ref = e["step_saved"]["reference"]
        row = f"| {e['cell']} | {e['size']} | {e['dtype']} | {_mb(ref)} | " + " | ".join(
            _ratio(e["step_saved"].get(v), ref) for v in fused)
        if has_stack:
            sref = e["stack_saved"]["reference"]
            row += f" | {_mb(sref)} | " + " | ".join(
                _ratio(e["stack_saved"].get(v), sref) for v in fused)
        if has_peak:
            pref = e["step_peak"]["reference"]
            row += f" | {_mb(pref)} | " + " | ".join(
                _ratio(e["step_peak"].get(v), pref) for v in peaks)
        lines.append(row + " |")
    lines += ["", "Bytes autograd keeps for backward (unique storages, parameters excluded): "
              "one step from a random state, and a 2-layer stack unrolled over 6 frames whose "
              "frames need no gradient (as in training)." + (
                  " Step peak: CUDA allocator peak above the inputs during one step fwd+bwd."
                  if has_peak else ""), ""]
    return lines


def _ratio(value, ref) -> str:
    return "—" if value is None or not ref else f"{value / ref:.2f}"


def _targets_lines(targets: list) -> list[str]:
    if not targets:
        return []
    lines = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in targets:
        lines.append(f"| {t['what']} | {t['measured']:.2f} | {'yes' if t['met'] else 'no'} |")
    return lines + [""]
