"""Everything a lent GPU should do, in one call: build, test, benchmark, write results.

    python3 benchmarks/gpu_suite.py [--out DIR] [--quick] [--skip-build] [--skip-tests]

Steps (each logged; a failing step is recorded and the next still runs):
1. machine info: GPU name, driver, torch/triton/nvcc versions, date;
2. build the CPU and CUDA extensions in place (``FASTCELLS_CUDA=1 python setup.py
   build_ext --inplace``; sm_80 and sm_90 code);
3. the GPU tests: ``FASTCELLS_GPU_TESTS=1 pytest tests/test_gpu.py tests/test_cuda_backend.py``
   (both GPU backends against the reference on CUDA tensors, inductor, CUDA graphs);
4. the device-to-device copy bandwidth (the ceiling of the gate kernels);
5. ``python -m fastcells.bench kernels`` on CUDA: gate kernels and cell steps, fp32 and
   bf16, B=4 C=32 and B=16 C=64 at 64x64 (and the 180x180 radar size), every backend plus
   eager and ``torch.compile`` of the reference, saved bytes and peak memory;
6. ``python -m fastcells.bench train`` on CUDA: training-cost tables (MS-LSTM format) of
   convlstm, predrnn and ms_lstm (mmnist preset, B=16), eager vs fused vs compiled, and
   memory_efficient;
7. whole sequences eager vs captured in a CUDA graph (:mod:`fastcells.cuda_graphs`);
8. the fused implicit-GEMM convolution + gates (``ConvLSTMCell(fused_conv=True)``) against
   cuDNN convolution + the Triton gate kernel, forward and forward+backward (it is off by
   default until this says it pays);
9. the ``backend="auto"`` rule this GPU measures (fastest backend per cell from step 5),
   compared with :data:`fastcells.backends.AUTO_PREFERENCE`.

Writes ``gpu_suite.json`` and ``gpu_suite.md`` (summary), the bench files
(``cuda_kernels.*``, ``cuda_train.*``) and the logs into ``--out`` (default
``benchmarks/results/gpu``; on the device tool, pass ``--out $OUT`` to bring them back and
commit them under ``benchmarks/results/gpu/``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], log: Path, env: dict | None = None, timeout: float = 1800) -> dict:
    """Runs a command, teeing its output into ``log``; returns status and duration."""
    start = time.time()
    print(f"\n$ {' '.join(cmd)}", flush=True)
    with open(log, "w") as f:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=timeout)
            out, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as exc:
            out, rc = (exc.stdout or "") if isinstance(exc.stdout, str) else "", "timeout"
        f.write(out)
    tail = "\n".join(out.splitlines()[-15:])
    print(tail, flush=True)
    return {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.time() - start, 1),
            "log": log.name, "tail": tail}


def machine() -> dict:
    import torch

    info = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}",
                    multiprocessors=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1))
    for tool, args in (("nvcc", ["--version"]), ("nvidia-smi", ["--query-gpu=driver_version",
                                                                "--format=csv,noheader"])):
        if shutil.which(tool):
            out = subprocess.run([tool, *args], capture_output=True, text=True).stdout
            info[tool] = out.strip().splitlines()[-1] if out.strip() else None
    return info


def copy_bandwidth(nbytes: int = 2 * 2**30) -> float:
    """Device-to-device copy in GB/s, counting bytes read plus bytes written."""
    import torch
    from triton.testing import do_bench

    a = torch.randn(nbytes // 4, device="cuda")
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), warmup=50, rep=300, return_mode="median")
    return 2 * a.numel() * 4 / (ms * 1e-3) / 1e9


def graphs_vs_eager(quick: bool) -> list[dict]:
    """fwd+bwd of a 2-layer, T=10 sequence at the papers' small batch, eager vs graphed."""
    import torch
    from triton.testing import do_bench

    import fastcells as fc
    from fastcells.backends import supports
    from fastcells.cuda_graphs import graph_sequence

    rows = []
    layers = {"convlstm": fc.ConvLSTM, "stlstm": fc.SpatioTemporalLSTM, "mklstm": fc.MKLSTM,
              "convttlstm": fc.ConvTTLSTM}
    for name, cls in layers.items():
        for backend in ("triton", "cuda"):
            if not supports(backend, torch.device("cuda"), torch.float32):
                continue
            layer = cls(1, 32, num_layers=2, backend=backend).cuda()
            x = torch.randn(4, 5 if quick else 10, 1, 64, 64, device="cuda")

            def eager():
                layer(x)[0].square().sum().backward()

            graphed = graph_sequence(layer, x)

            def replay():
                graphed(x).square().sum().backward()

            t_e = do_bench(eager, warmup=25, rep=200, return_mode="median")
            t_g = do_bench(replay, warmup=25, rep=200, return_mode="median")
            rows.append({"cell": name, "backend": backend, "eager_ms": t_e, "graph_ms": t_g,
                         "speedup": t_e / t_g})
            print(f"graphs {name:10s} {backend:6s} eager {t_e:7.2f} ms  graph {t_g:7.2f} ms "
                  f"({t_e / t_g:.2f}x)", flush=True)
    return rows


def fused_conv_vs_unfused(quick: bool) -> list[dict]:
    """ConvLSTM step on triton with and without the fused convolution + gates kernel."""
    import torch
    from triton.testing import do_bench

    import fastcells as fc

    rows = []
    sizes = [(4, 32), (16, 64)] if not quick else [(4, 32)]
    for (batch, channels) in sizes:
        for k in (3, 5):
            for dtype in (torch.float32, torch.bfloat16):
                cells = {f: fc.ConvLSTMCell(channels, channels, k, backend="triton",
                                            fused_conv=f).cuda().to(dtype) for f in (False, True)}
                cells[True].load_state_dict(cells[False].state_dict())
                x = torch.randn(batch, channels, 64, 64, device="cuda", dtype=dtype)
                state = tuple(torch.randn(batch, channels, 64, 64, device="cuda", dtype=dtype,
                                          requires_grad=True) for _ in range(2))
                row = {"batch": batch, "channels": channels, "kernel": k,
                       "dtype": str(dtype).replace("torch.", "")}
                for fused, cell in cells.items():
                    def fwd(cell=cell):
                        with torch.no_grad():
                            cell(x, state)

                    def fwd_bwd(cell=cell):
                        h, c = cell(x, state)
                        torch.autograd.grad((h.float().sum() + c.float().sum()),
                                            [*state, *cell.parameters()])

                    tag = "fused" if fused else "unfused"
                    row[f"{tag}_fwd_ms"] = do_bench(fwd, return_mode="median")
                    row[f"{tag}_fwd_bwd_ms"] = do_bench(fwd_bwd, return_mode="median")
                rows.append(row)
                print(f"fused conv {row}", flush=True)
    return rows


def measured_auto_rule(kernels_json: Path) -> dict:
    """Fastest fused backend per cell (fwd+bwd step, fp32 and bf16, every size), from the
    kernel table, beside the preference list fastcells uses."""
    from fastcells.backends import AUTO_PREFERENCE

    data = json.loads(kernels_json.read_text())
    wins: dict[str, dict[str, int]] = {}
    for row in data.get("rows", []):
        if row.get("kind") != "step" or row.get("mode") != "fwd+bwd":
            continue
        times = {v: t["median"] for v, t in row.get("times", {}).items()
                 if v in ("triton", "cuda")}
        if times:
            best = min(times, key=times.get)
            wins.setdefault(row["cell"], {}).setdefault(best, 0)
            wins[row["cell"]][best] += 1
    return {cell: {"wins": w, "measured_first": max(w, key=w.get),
                   "preference": list(AUTO_PREFERENCE.get(cell, ()))}
            for cell, w in wins.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu"))
    parser.add_argument("--quick", action="store_true", help="smaller benchmark runs")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    summary: dict = {"machine": machine(), "steps": {}}
    print(json.dumps(summary["machine"], indent=1), flush=True)
    steps = summary["steps"]
    if not args.skip_build:
        steps["build"] = _run([py, "setup.py", "build_ext", "--inplace"], out / "build.log",
                              {"FASTCELLS_CUDA": "1"})
    if not args.skip_tests:
        steps["tests"] = _run([py, "-m", "pytest", "tests/test_gpu.py",
                               "tests/test_cuda_backend.py", "-q", "-x", "-p", "no:cacheprovider"],
                              out / "tests.log", {"FASTCELLS_GPU_TESTS": "1"})
    try:
        summary["copy_bandwidth_gbs"] = copy_bandwidth()
        print(f"copy bandwidth: {summary['copy_bandwidth_gbs']:.0f} GB/s", flush=True)
    except Exception as exc:  # recorded, the other steps still run
        summary["copy_bandwidth_gbs"] = f"failed: {exc!r}"
    quick = ["--quick"] if args.quick else []
    # fastcells.bench writes <device>_kernels.{md,json} and <device>_train.{md,json}
    steps["kernels"] = _run([py, "-m", "fastcells.bench", "kernels", "--device", "cuda",
                             "--dtypes", "fp32", "bf16", "--no-progress", *quick,
                             "--out", str(out)], out / "kernels.log")
    steps["train"] = _run([py, "-m", "fastcells.bench", "train", "--device", "cuda",
                           "--batch", "16", "--no-progress", *quick, "--out", str(out)],
                          out / "train.log")
    try:
        summary["cuda_graphs"] = graphs_vs_eager(args.quick)
    except Exception as exc:
        summary["cuda_graphs"] = f"failed: {exc!r}"
    try:
        summary["fused_conv"] = fused_conv_vs_unfused(args.quick)
    except Exception as exc:
        summary["fused_conv"] = f"failed: {exc!r}"
    if (out / "cuda_kernels.json").exists():
        try:
            summary["auto_rule"] = measured_auto_rule(out / "cuda_kernels.json")
        except Exception as exc:
            summary["auto_rule"] = f"failed: {exc!r}"
    (out / "gpu_suite.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "gpu_suite.md").write_text(render(summary))
    print("\n" + render(summary), flush=True)
    return 0 if all(s.get("rc") == 0 for s in steps.values()) else 1


def render(summary: dict) -> str:
    m = summary["machine"]
    lines = [f"# GPU suite: {m.get('gpu')} ({m.get('date')})", "",
             f"torch {m.get('torch')}, triton {m.get('triton')}, CUDA {m.get('cuda_runtime')}, "
             f"driver {m.get('nvidia-smi')}", "", "| step | rc | seconds |", "|---|---|---|"]
    for name, s in summary["steps"].items():
        lines.append(f"| {name} | {s['rc']} | {s['seconds']} |")
    bw = summary.get("copy_bandwidth_gbs")
    lines += ["", f"Copy bandwidth: {bw:.0f} GB/s" if isinstance(bw, float) else f"Copy: {bw}"]
    graphs = summary.get("cuda_graphs")
    if isinstance(graphs, list) and graphs:
        lines += ["", "| cell | backend | eager ms | graph ms | speedup |", "|---|---|---|---|---|"]
        lines += [f"| {r['cell']} | {r['backend']} | {r['eager_ms']:.2f} | {r['graph_ms']:.2f} "
                  f"| {r['speedup']:.2f}x |" for r in graphs]
    fused = summary.get("fused_conv")
    if isinstance(fused, list) and fused:
        lines += ["", "| B | C | K | dtype | fwd unfused / fused ms | fwd+bwd unfused / fused ms |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['batch']} | {r['channels']} | {r['kernel']} | {r['dtype']} "
                  f"| {r['unfused_fwd_ms']:.3f} / {r['fused_fwd_ms']:.3f} "
                  f"| {r['unfused_fwd_bwd_ms']:.3f} / {r['fused_fwd_bwd_ms']:.3f} |"
                  for r in fused]
    rule = summary.get("auto_rule")
    if isinstance(rule, dict):
        lines += ["", "| cell | fastest (wins) | AUTO_PREFERENCE |", "|---|---|---|"]
        lines += [f"| {c} | {r['measured_first']} {r['wins']} | {r['preference']} |"
                  for c, r in rule.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
