"""The steps of benchmarks/gpu_suite.py: what each one runs, on a GPU or in the dry run.

Each step is a function of a :class:`Context` and runs in a process of its own (the suite
kills it at its deadline). What it finds it hands to :meth:`Context.emit` at once, one JSON
line per record appended to the suite's records file, so that a step killed part-way still
leaves everything it had measured. Record kinds:

- ``figure``: a named value (``name``, ``value``);
- ``skipped``: something this step could not do here (``what``, ``why``), e.g. a CUDA-only
  call in the dry run ("skipped: no GPU");
- ``bench``: a part of a :mod:`fastcells.bench` table (``table``, ``part``, ``data``), as
  that module's ``emit`` hands them over;
- ``test``: one test outcome, written by the pytest processes themselves
  (tests/conftest.py, ``FASTCELLS_TEST_RECORDS``).

In the dry run (``Context.dry``) every step runs its own code on the CPU with tiny sizes:
the Triton kernels through the interpreter, and calls that need CUDA replaced by a
``skipped`` record, so that a crash of the suite itself shows here, not in the lease.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gpu_report

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = "no GPU (dry run)"


@dataclass
class Context:
    dry: bool
    records: Path  # JSON lines, appended
    scratch: Path  # files of this step's children (logs); appended to the suite's log
    summary: Path  # the phase's summary JSON so far (steps that read earlier steps' results)

    @property
    def device(self):
        import torch

        return torch.device("cpu" if self.dry else "cuda")

    def emit(self, kind: str, **data) -> None:
        with open(self.records, "a") as f:  # one write per line
            f.write(json.dumps({"kind": kind, **data}, default=str) + "\n")

    def figure(self, name: str, value) -> None:
        print(f"{name}: {value}", flush=True)
        self.emit("figure", name=name, value=value)

    def skipped(self, what: str, why: str = NO_GPU) -> None:
        print(f"skipped {what}: {why}", flush=True)
        self.emit("skipped", what=what, why=why)

    def bench_emitter(self, table: str):
        """An ``emit`` for :func:`fastcells.bench.kernels.run_kernels` and
        :func:`fastcells.bench.training.run_training`."""
        def emit(part: str, data: dict) -> None:
            self.emit("bench", table=table, part=part, data=data)
        return emit


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _run(cmd: list, env: dict) -> int:
    """A command's exit status; its output goes to the suite's log (this process's stdout)."""
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


# ------------------------------------------------------------------------------- machine
def machine(ctx: Context) -> None:
    """Versions and the GPU: what every figure of this run was measured with."""
    import platform

    import torch

    from fastcells import _ext
    from fastcells.bench import timing

    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
            "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "cpu_count": os.cpu_count(), "numpy": _ext._module_version("numpy"),
            "triton": _ext._module_version("triton"),
            # no .git on the device: gpu_report.merge names the commit from this digest
            "commit": timing._git_commit(), "source_digest": gpu_report.source_digest()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}",
                    multiprocessors=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1))
    else:
        info["gpu"] = None
    for tool, args in (("nvcc", ["--version"]),
                       ("nvidia-smi", ["--query-gpu=driver_version", "--format=csv,noheader"])):
        try:
            out = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30)
            info[tool] = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            info[tool] = None
    ctx.figure("machine", info)
    if info["gpu"] is None and not ctx.dry:
        raise RuntimeError("torch sees no CUDA GPU (torch.cuda.is_available() is False)")


# --------------------------------------------------------------------------------- build
def build_command() -> tuple[list, dict]:
    """The CUDA extension only (the CPU extension is not needed on the GPU machine), in
    place, for the GPU present (TORCH_CUDA_ARCH_LIST), with ninja on every core."""
    import torch

    env = {"FASTCELLS_SKIP_CPP": "1", "FASTCELLS_CUDA": "1",
           "MAX_JOBS": str(os.cpu_count() or 1)}
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        env["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
    return [sys.executable, "setup.py", "build_ext", "--inplace"], env


def build(ctx: Context) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("fastcells_setup", ROOT / "setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    home, found = setup.find_cuda_home()
    ctx.figure("cuda_toolkit", {"home": home, "found": found})
    cmd, env = build_command()
    ctx.figure("build_command", " ".join(f"{k}={v}" for k, v in env.items()) + " "
               + " ".join(os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c
                          for c in cmd))
    import torch

    if ctx.dry or torch.version.cuda is None:
        ctx.skipped("building the CUDA extension",
                    NO_GPU if ctx.dry else "this torch has no CUDA")
        return
    stamp = build_stamp(env)
    stamp_file = ROOT / "build" / "fastcells_cuda.stamp"
    # A warm machine keeps the tests phase's build, but the copied sources come with new
    # mtimes, which would make setuptools rebuild everything: the stamp (sources, torch,
    # arch) says whether the extension there is this one.
    if stamp_file.exists() and stamp_file.read_text() == stamp and _imports_cuda_extension():
        ctx.figure("build", "up to date (same sources, torch and arch as the last build)")
        return
    started = time.time()
    rc = _run(cmd, _env(**env))
    ctx.figure("build_seconds", round(time.time() - started, 1))
    if rc != 0:
        raise RuntimeError(f"the CUDA extension failed to build (exit {rc}); the log has the "
                           "compiler's output")
    error = _imports_cuda_extension(report=True)
    if error is not True:
        raise RuntimeError("built, but fastcells._C_cuda does not import:\n" + error)
    stamp_file.parent.mkdir(exist_ok=True)
    stamp_file.write_text(stamp)


def build_stamp(env: dict) -> str:
    import hashlib

    import torch

    h = hashlib.sha256(f"{torch.__version__} {env.get('TORCH_CUDA_ARCH_LIST')}".encode())
    for path in sorted([*(ROOT / "csrc" / "cuda").iterdir(), ROOT / "setup.py"]):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def _imports_cuda_extension(report: bool = False):
    """True when a fresh process imports fastcells._C_cuda; else False (or its error)."""
    check = subprocess.run([sys.executable, "-c", "import fastcells._C_cuda"], cwd=ROOT,
                           env=_env(), capture_output=True, text=True)
    return True if check.returncode == 0 else (check.stderr if report else False)


def _require_cuda_extension(ctx: Context, what: str) -> None:
    """Without fastcells._C_cuda the tables lack the cuda backend and ``auto`` falls back
    to triton: said in the summary, not left for a reader to infer from a missing column."""
    from fastcells import _ext

    if not ctx.dry and not _ext.cuda_available():
        ctx.skipped(f"{what}: backend 'cuda'", "fastcells._C_cuda is not built or does not "
                    "load (see the build step); its rows are missing")


# ------------------------------------------------------------------------------- imports
def imports(ctx: Context) -> None:
    """The working tree as copied to the machine: fastcells.kernels (a link to ../kernels)
    resolves, both GPU backends are available, and one tiny Triton step compiles and runs."""
    import torch

    import fastcells as fc
    from fastcells import _ext

    import fastcells.kernels

    kernels = Path(fastcells.kernels.__file__).resolve().parent
    ctx.figure("fastcells.kernels", str(kernels))
    if kernels != (ROOT / "kernels").resolve():
        raise RuntimeError(f"fastcells.kernels imports from {kernels}, not {ROOT / 'kernels'}")
    ctx.figure("triton", _ext.triton_unavailable_reason() or "available")
    ctx.figure("cuda_extension", "available" if _ext.cuda_available() else
               str(_ext._cuda_error))
    problems = []
    if _ext.triton_unavailable_reason():
        problems.append(_ext.triton_unavailable_reason())
    if not ctx.dry and not _ext.cuda_available():
        problems.append(f"fastcells._C_cuda does not load: {_ext._cuda_error}")
    device = ctx.device
    backends = ["triton"] + ([] if ctx.dry else ["cuda"])
    for backend in backends:
        try:
            cell = fc.ConvLSTMCell(3, 8, backend=backend).to(device)
            x = torch.randn(2, 3, 9, 11, device=device, requires_grad=True)
            h, c = cell(x)
            (h.sum() + c.sum()).backward()
            ctx.figure(f"{backend}_smoke", f"ok ({cell.backend}, {device.type})")
        except Exception as exc:  # recorded; the tests step gives the details
            problems.append(f"{backend}: {type(exc).__name__}: {exc}")
    if ctx.dry:
        ctx.skipped("backend 'cuda' smoke step")
    if problems:
        raise RuntimeError("; ".join(problems))


# ---------------------------------------------------------------------------------- tests
# The [emulated-*] twins and the nvcc compile checks of test_cuda_backend.py run in CPU CI
# already; on the GPU they would only cost the lease (an emulation build, 16 nvcc jobs).
GPU_TEST_FILES = ["tests/test_gpu.py", "tests/test_cuda_backend.py", "-k",
                  "not emulated and not test_cu_compiles and not test_bindings_compile"]
# The dry run: the same machinery (shards, records, counts) over tests that run on a CPU
# in seconds (test_gpu.py skips whole without a GPU).
DRY_TEST_ARGS = ["tests/test_gpu.py", "tests/test_cuda_backend.py", "-k", "setup"]


def gpu_tests(ctx: Context) -> None:
    """Both GPU backends against the reference on CUDA tensors (every op, cell and dtype),
    inductor and CUDA graphs: tests/test_gpu.py and tests/test_cuda_backend.py, as several
    pytest processes at once (Triton compiles on the CPU, one kernel at a time per
    process), never stopping at the first failure."""
    shards = 2 if ctx.dry else max(1, min(8, (os.cpu_count() or 2) // 2))
    args = DRY_TEST_ARGS if ctx.dry else GPU_TEST_FILES
    env = {} if ctx.dry else {"FASTCELLS_GPU_TESTS": "1"}
    procs = []
    for i in range(shards):
        log = ctx.scratch / f"tests-shard{i}.log"
        cmd = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider",
               "--maxfail=100000", "-rfE", "--tb=short"]
        procs.append(subprocess.Popen(
            cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
            env=_env(**env, FASTCELLS_TEST_SHARD=f"{i}/{shards}",
                     FASTCELLS_TEST_RECORDS=str(ctx.records),
                     # the shards share the cores: inductor's compile workers per shard
                     TORCHINDUCTOR_COMPILE_THREADS="2")))
    print(f"$ pytest {' '.join(args)}  ({shards} shards, FASTCELLS_TEST_SHARD=i/{shards}; "
          "their output follows this step)", flush=True)
    codes = [p.wait() for p in procs]
    ctx.figure("pytest_exit_codes", codes)
    # 0: all passed; 1: some failed (listed from the records); anything else: pytest
    # itself failed (collection error, usage), which the records cannot show.
    if any(code not in (0, 1) for code in codes):
        raise RuntimeError(f"pytest exit codes {codes}: a shard failed to run its tests "
                           "(collection error?); see its output in the log")
    if 1 in codes:
        raise RuntimeError("some GPU tests failed (listed in the summary)")


# --------------------------------------------------------------------------------- bench
def copy_bandwidth(ctx: Context) -> None:
    """The roofs: device-to-device copy (bytes read + written) and a large matrix product."""
    import torch

    from fastcells.bench import timing

    for dtype in (torch.float32, torch.bfloat16):
        roofs = timing.measure_roofs(ctx.device, dtype, quick=ctx.dry)
        name = str(dtype).replace("torch.", "")
        ctx.figure(f"copy_GBps_{name}", round(roofs["bandwidth"] / 1e9, 1))
        ctx.figure(f"matmul_TFLOPs_{name}", round(roofs["matmul"] / 1e12, 2))


def _kernel_config(ctx: Context, size_name: str, compiled: bool = False):
    import torch

    from fastcells.bench import kernels, workloads

    if ctx.dry:
        return kernels.KernelConfig(
            device=ctx.device, dtypes=(torch.float32,),
            sizes={size_name: workloads.Size(1, 4, 8, 8)},
            cells=("convlstm",), interpreter=True,
            variants=("reference", "compiled", "triton") if compiled else None,
            kinds=("step",) if compiled else kernels.KINDS,
            modes=("fwd+bwd",) if compiled else workloads.MODES,
            compile=compiled, compile_backend="aot_eager", repeats=1, warmup=1,
            stack_memory=False, quick=True)
    if compiled:  # one size and dtype: inductor's compile time is the cost
        return kernels.KernelConfig(
            device=ctx.device, dtypes=(torch.float32,),
            sizes={size_name: workloads.SIZES[size_name]}, kinds=("step",),
            modes=("fwd+bwd",), variants=("reference", "compiled", "triton", "cuda"),
            compile=True, budget_s=0.5, stack_memory=False)
    return kernels.KernelConfig(
        device=ctx.device, dtypes=(torch.float32, torch.bfloat16),
        sizes={size_name: workloads.SIZES[size_name]}, compile=False, budget_s=0.25,
        stack_memory=False)


def _bench_kernels(ctx: Context, size_name: str, table: str, compiled: bool = False) -> None:
    from fastcells.bench import kernels

    _require_cuda_extension(ctx, table)
    cfg = _kernel_config(ctx, size_name, compiled)
    result = kernels.run_kernels(cfg, progress=False, emit=ctx.bench_emitter(table))
    if ctx.dry:
        ctx.skipped(f"{table}: the CUDA backend's rows and the peak GPU memory")
    print(kernels.format_kernels(result), flush=True)


def kernels_small(ctx: Context) -> None:
    """Gate kernels and cell steps, B=4 C=32 64x64, fp32 and bf16, every backend and
    memory_efficient against eager (the reference backend)."""
    _bench_kernels(ctx, "small", "kernels")


def kernels_large(ctx: Context) -> None:
    """The same at B=16 C=64 64x64."""
    _bench_kernels(ctx, "large", "kernels")


def compiled(ctx: Context) -> None:
    """``torch.compile`` (inductor) of the reference cell step, B=4 C=32 64x64, fp32, beside
    eager and the fused backends, with its compile time."""
    _bench_kernels(ctx, "small", "compiled", compiled=True)


def train(ctx: Context) -> None:
    """Training iterations of convlstm, predrnn and ms_lstm (mmnist preset, B=16): eager vs
    fused vs memory_efficient, time and peak memory (no FLOP count: no fvcore there)."""
    from fastcells.bench import training

    if ctx.dry:
        cfg = training.TrainBenchConfig(
            device=ctx.device, models=("convlstm",), batch=1, input_len=2, pred_len=1,
            variants=("eager", "fused", "fused_memeff"), repeats=1, flops=False, quick=True,
            overrides={"hidden_size": 4})
    else:
        cfg = training.TrainBenchConfig(
            device=ctx.device, models=training.DEFAULT_MODELS, batch=16,
            variants=("eager", "fused", "fused_memeff"), repeats=5, flops=False)
    _require_cuda_extension(ctx, "train (fused = auto's backend)")
    result = training.run_training(cfg, progress=False, emit=ctx.bench_emitter("train"))
    if ctx.dry:
        ctx.skipped("train: peak GPU memory")
    print(training.format_training(result), flush=True)


def auto_rule(ctx: Context) -> None:
    """The ``backend="auto"`` rule this GPU measures: per cell, the fused backend with the
    most fastest fwd+bwd steps over the kernel tables (every size and dtype), beside
    :data:`fastcells.backends.AUTO_PREFERENCE`."""
    from fastcells.backends import AUTO_PREFERENCE

    summary = json.loads(ctx.summary.read_text())
    rows = [r for phase in summary["phases"].values() for s in phase["steps"].values()
            for r in s.get("bench", {}).get("kernels", {}).get("rows", [])]
    rule = measured_auto_rule(rows, AUTO_PREFERENCE)
    if not rule:
        raise RuntimeError("no fwd+bwd step rows with a GPU backend in this run's kernel "
                           "tables (did the kernels steps run?)")
    if not ctx.dry and not any("cuda" in r.get("times", {}) for r in rows):
        # a rule measured without one of the two candidates would read as a verdict
        raise RuntimeError("the kernel tables have no cuda rows (fastcells._C_cuda missing): "
                           "no rule is measured from triton alone")
    ctx.figure("auto_rule", rule)


def measured_auto_rule(rows: list, preference: dict) -> dict:
    wins: dict = {}
    for row in rows:
        if row.get("kind") != "step" or row.get("mode") != "fwd+bwd":
            continue
        times = {v: t["median"] for v, t in row.get("times", {}).items()
                 if v in ("triton", "cuda")}
        if times:
            best = min(times, key=times.get)
            wins.setdefault(row["cell"], {}).setdefault(best, 0)
            wins[row["cell"]][best] += 1
    return {cell: {"wins": w, "measured_first": max(w, key=w.get),
                   "preference": list(preference.get(cell, ()))}
            for cell, w in wins.items()}


def _timed(ctx: Context, fns: dict) -> dict:
    """Medians in ms, side by side (CUDA events on the GPU)."""
    from fastcells.bench import timing

    times = timing.time_side_by_side(fns, 1 if ctx.dry else None, 1 if ctx.dry else 3,
                                     ctx.device, budget_s=0.5)
    return {k: round(v["median"] * 1e3, 4) for k, v in times.items()}


def fused_conv(ctx: Context) -> None:
    """ConvLSTM step with the fused implicit-GEMM convolution + gates kernel
    (``fused_conv=True``) against cuDNN convolution + the Triton gate kernel."""
    import torch

    import fastcells as fc

    sizes = [(1, 4, 8, 8)] if ctx.dry else [(4, 32, 64, 64), (16, 64, 64, 64)]
    dtypes = [torch.float32] if ctx.dry else [torch.float32, torch.bfloat16]
    for (batch, channels, height, width) in sizes:
        for k in ((3,) if ctx.dry else (3, 5)):
            for dtype in dtypes:
                cells = {f: fc.ConvLSTMCell(channels, channels, k, backend="triton",
                                            fused_conv=f).to(ctx.device, dtype)
                         for f in (False, True)}
                cells[True].load_state_dict(cells[False].state_dict())
                x = torch.randn(batch, channels, height, width, device=ctx.device, dtype=dtype)
                state = [torch.randn_like(x).requires_grad_() for _ in range(2)]
                fns = {}
                for fused, cell in cells.items():
                    tag = "fused" if fused else "unfused"

                    def fwd(cell=cell):
                        with torch.no_grad():
                            cell(x, state)

                    def fwd_bwd(cell=cell):
                        h, c = cell(x, state)
                        torch.autograd.grad(h.float().sum() + c.float().sum(),
                                            [*state, *cell.parameters()])

                    fns[f"{tag}_fwd"], fns[f"{tag}_fwd_bwd"] = fwd, fwd_bwd
                ms = _timed(ctx, fns)
                ctx.emit("row", table="fused_conv", data={
                    "batch": batch, "channels": channels, "size": f"{height}x{width}",
                    "kernel": k, "dtype": str(dtype).replace("torch.", ""), "ms": ms})
                print(f"fused_conv B={batch} C={channels} k={k} {dtype}: {ms}", flush=True)


def cuda_graphs(ctx: Context) -> None:
    """A 2-layer, T=10 sequence forward + backward, eager vs captured in CUDA graphs
    (:func:`fastcells.cuda_graphs.graph_sequence`), per layer and GPU backend."""
    import torch

    import fastcells as fc
    from fastcells.backends import supports

    layers = {"convlstm": fc.ConvLSTM, "stlstm": fc.SpatioTemporalLSTM, "mklstm": fc.MKLSTM,
              "convttlstm": fc.ConvTTLSTM}
    for name, cls in layers.items():
        for backend in ("triton", "cuda"):
            if not ctx.dry and not supports(backend, ctx.device, torch.float32):
                ctx.skipped(f"cuda_graphs {name} {backend}", f"backend {backend} unavailable")
                continue
            if ctx.dry and backend == "cuda":
                continue
            hidden, frames, size = (4, 2, 8) if ctx.dry else (32, 10, 64)
            layer = cls(1, hidden, num_layers=2, backend=backend).to(ctx.device)
            x = torch.randn(1 if ctx.dry else 4, frames, 1, size, size, device=ctx.device)
            if ctx.dry:  # the eager half runs; capture needs CUDA
                layer(x)[0].square().sum().backward()
                ctx.skipped(f"cuda_graphs {name}: graph capture")
                continue
            from fastcells.cuda_graphs import graph_sequence

            graphed = graph_sequence(layer, x)
            ms = _timed(ctx, {"eager": lambda: layer(x)[0].square().sum().backward(),
                              "graph": lambda: graphed(x).square().sum().backward()})
            ctx.emit("row", table="cuda_graphs",
                     data={"layer": name, "backend": backend, "ms": ms})
            print(f"cuda_graphs {name} {backend}: {ms}", flush=True)
