"""What a lent GPU must do, in two calls of the device tool that fit its 15 minutes.

A session whose device ``status`` says ``can_start_another: true`` runs, before anything
else (the second call at once after the first returns, while the machine is warm: it goes
back after 30 s idle, and a fresh one costs its start again and rebuilds)::

    1. run, timeout_s=480:
       PYTHONUNBUFFERED=1 python3 benchmarks/gpu_suite.py --phase tests --out $OUT
    2. run, timeout_s=600:
       PYTHONUNBUFFERED=1 python3 benchmarks/gpu_suite.py --phase bench --out $OUT --budget B

Commit before call 1: the device gets the working tree without .git, and ``merge`` below
names the commit whose sources the run used (``gpu_report.source_digest``).

B = the ``budget_left_s`` that ``status`` shows after call 1, minus 60 (at most 540,
the default), then ``give_back``. If call 1 returns with less than 5 minutes of device time
left, skip call 2: the bench phase's first steps alone are not worth a fresh machine's
start. Then, here, for each call's files (``files_at``)::

    python3 benchmarks/gpu_report.py merge <files_at of call 1> <files_at of call 2>

which merges both calls into ``benchmarks/results/gpu/gpu_suite.json`` and renders
``benchmarks/results/gpu/*.md`` and README's GPU block from it (``make gpu-results``
re-renders). Commit those. ``python3 benchmarks/gpu_suite.py --plan`` shows the steps,
their estimated seconds on an H200 and the budget of each phase.

Phases and steps (in priority order: when the budget runs short, the last ones go):

- ``tests`` (default budget 420 s): the machine; build the CUDA extension only
  (``FASTCELLS_SKIP_CPP=1``, ninja on every core, ``TORCH_CUDA_ARCH_LIST`` of the GPU
  found); the working tree as copied (``fastcells/kernels`` link, both GPU backends load,
  one tiny step each); the GPU tests (tests/test_gpu.py, tests/test_cuda_backend.py: both
  GPU backends against the reference on CUDA tensors, every op, cell and dtype, inductor,
  CUDA graphs) as parallel pytest shards that never stop at the first failure.
- ``bench`` (default budget 540 s): the machine; the build (quick when the tests phase
  left it); copy bandwidth and matmul roofs; gate kernels and cell steps at B=4 C=32 and
  B=16 C=64, 64x64, fp32 and bf16, every backend and memory_efficient against eager;
  training iterations of convlstm, predrnn and ms_lstm (mmnist, B=16) eager vs fused vs
  memory_efficient with peak memory; the measured ``auto`` rule; ``fused_conv`` against
  cuDNN + the gate kernel; whole sequences eager vs CUDA graphs; ``torch.compile`` of the
  reference at one size and dtype (its compile time is the cost).

Budget: each step runs in a process of its own with a deadline taken from what is left
(at most twice its estimate plus a minute); a step whose estimate no longer fits is not
started and is recorded as skipped; a step killed at its deadline keeps what it had
emitted. The summary (``gpu_suite.json``: machine, versions, date, every step's status,
duration and figures) and its Markdown (``gpu_suite.md``) are rewritten after every step
and every 15 s while one runs, so a call killed at any point still brings back everything
done so far; ``gpu_suite.log`` has every step's output. Three files in ``--out``.

``--dry-run`` runs every step's own code on this CPU with tiny sizes (Triton through the
interpreter, CUDA-only calls recorded as "skipped: no GPU"); tests/test_gpu_suite.py runs
it, so a crash of the suite shows in CI and not in the lease.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import gpu_report  # noqa: E402

PHASES = ("tests", "bench")
# The tests phase gets the larger share of the lease (proving the backends comes first); the
# bench phase gets what is left (module docstring) and drops its last steps when short.
DEFAULT_BUDGET = {"tests": 420.0, "bench": 540.0}
RESERVE_S = 10.0  # kept back from every deadline for the last summary write
POLL_S = 15.0
# A step's deadline: what is left of the budget, at most FACTOR x its estimate + SLACK (an
# estimate can be off; a hung step must not take the steps after it down too).
DEADLINE_FACTOR, DEADLINE_SLACK_S = 2.0, 60.0
CHILD_LOG_CHARS = 1_500_000  # per child log (8 shards) kept in gpu_suite.log
FILES = ("gpu_suite.json", "gpu_suite.md", "gpu_suite.log")


@dataclass(frozen=True)
class Step:
    name: str
    target: str  # "module:function" taking a gpu_steps.Context
    estimate_s: float  # on an H200 (16 cores): the reasoning below
    why: str  # the estimate's reasoning
    # the least deadline it gets when the budget allows: the bench phase's build is
    # estimated for the usual case (nothing to do), but a fresh machine builds for real
    min_deadline_s: float = 0.0


# Estimates, H200 + 16 cores. Triton compiles each kernel specialization on one CPU core
# (about 1 s each for the gate kernels, 2-5 s for the implicit-GEMM ones); nvcc builds the
# three .cu files and the bindings in parallel for sm_90 alone.
_MACHINE = Step("machine", "gpu_steps:machine", 5, "nvcc/nvidia-smi queries")
STEPS = {
    "tests": [
        _MACHINE,
        Step("build", "gpu_steps:build", 100,
             "3 .cu files (sm_90 only) and bindings.cpp (torch headers, ~60 s) in parallel",
             min_deadline_s=240),
        Step("imports", "gpu_steps:imports", 25,
             "import, CUDA init, 2 tiny steps (~8 Triton compiles)"),
        Step("gpu_tests", "gpu_steps:gpu_tests", 180,
             "~800 tests (the CPU-CI twins deselected) in 8 shards; ~250 Triton "
             "specializations (gate kernels: 5 ops x 3 dtypes x 3 layouts x fwd/bwd; cells; "
             "CTT; fused conv) at ~1-3 s, spread over 8 processes; 4 inductor compiles"),
    ],
    "bench": [
        _MACHINE,
        Step("build", "gpu_steps:build", 10,
             "nothing to do right after the tests call (warm machine: its build and stamp "
             "kept); on a fresh machine ~100 s, and then the last step does not fit",
             min_deadline_s=240),
        Step("copy_bandwidth", "gpu_steps:copy_bandwidth", 10,
             "1 GiB copies and 8192^2 matmuls, fp32 and bf16"),
        Step("kernels_small", "gpu_steps:kernels_small", 80,
             "64 rows (2 dtypes x 4 cells x gates/step x fwd/fwd+bwd) at ~0.4 s, ~40 "
             "Triton compiles (~1 s) not yet cached, peak memory per step"),
        Step("kernels_large", "gpu_steps:kernels_large", 50,
             "the same rows, compiles cached; 4x the work per call"),
        Step("train", "gpu_steps:train", 75,
             "3 models x 3 variants at B=16, ~0.1-0.3 s per iteration, 8 iterations each "
             "(warm-up, peak, 5 timed) plus the saved-bytes pass and new specializations"),
        Step("auto_rule", "gpu_steps:auto_rule", 5, "reads the kernel rows"),
        Step("fused_conv", "gpu_steps:fused_conv", 60,
             "8 configurations; the implicit-GEMM kernel compiles in ~3-5 s each"),
        Step("cuda_graphs", "gpu_steps:cuda_graphs", 40,
             "4 layers x 2 backends: capture, then ~0.5 s of timing each"),
        Step("compiled", "gpu_steps:compiled", 110,
             "inductor compiles 4 cell steps forward+backward, ~20-30 s each"),
    ],
}


def plan_text(budgets: dict | None = None) -> str:
    budgets = budgets or DEFAULT_BUDGET
    lines = []
    for phase in PHASES:
        total = 0.0
        lines += [f"phase {phase}: budget {budgets[phase]:.0f} s (one device call of at most "
                  f"600 s)", f"  {'step':16s} {'est. s':>7s} {'cum. s':>7s}  why"]
        for step in STEPS[phase]:
            total += step.estimate_s
            lines.append(f"  {step.name:16s} {step.estimate_s:7.0f} {total:7.0f}  {step.why}")
        verdict = "fits" if total + RESERVE_S <= budgets[phase] else "DOES NOT FIT"
        lines += [f"  total {total:.0f} s + {RESERVE_S:.0f} s reserve: {verdict} in "
                  f"{budgets[phase]:.0f} s", ""]
    lines.append("Estimates are for an H200 with 16 cores, the bench phase run right after "
                 "the tests phase on the same (warm) machine; a machine's start (a minute or "
                 "more) counts against the lease but not against these budgets.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- summary
def load_summary(path: Path, dry: bool) -> dict:
    """The summary in ``path`` (another phase run into the same folder) or a new one."""
    if path.exists():
        try:
            summary = json.loads(path.read_text())
            if summary.get("schema") == gpu_report.SCHEMA and summary.get("dry_run") == dry:
                return summary
        except json.JSONDecodeError:
            pass
        raise SystemExit(f"{path} exists and is not this suite's summary of a "
                         f"{'dry' if dry else 'GPU'} run: use an empty --out")
    return {"schema": gpu_report.SCHEMA, "suite": "benchmarks/gpu_suite.py", "dry_run": dry,
            "phases": {}}


def write_summary(out: Path, summary: dict) -> None:
    for name, text in (("gpu_suite.json", json.dumps(summary, indent=1, default=str)),
                       ("gpu_suite.md", gpu_report.render_summary(summary))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)  # a kill never leaves half a file


def read_records(path: Path) -> list:
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # the last line of a killed writer
                pass
    return records


# ----------------------------------------------------------------------------- running
def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the step and its children (pytest shards)
    except ProcessLookupError:
        pass
    proc.wait()


def run_step(step: Step, deadline_s: float, ctx_args: list, log, summary_cb) -> dict:
    """Runs ``step`` in its own process group; returns its status, seconds and records."""
    work = Path(tempfile.mkdtemp(prefix=f"gpu_suite_{step.name}_"))
    records = work / "records.jsonl"
    scratch = work / "scratch"
    scratch.mkdir()
    cmd = [sys.executable, str(HERE / "gpu_suite.py"), "--run-step", step.target,
           "--records", str(records), "--scratch", str(scratch), *ctx_args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), str(HERE),
                                                     os.environ.get("PYTHONPATH")) if p)}
    log.write(f"\n===== step {step.name} (deadline {deadline_s:.0f} s) =====\n")
    log.flush()
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    status = None
    while status is None:
        left = deadline_s - (time.time() - started)
        try:
            rc = proc.wait(timeout=max(0.1, min(POLL_S, left)))
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            if time.time() - started >= deadline_s:
                _kill(proc)
                status = "timeout"
            else:
                summary_cb(read_records(records))  # partial results reach the summary
    seconds = time.time() - started
    for child_log in sorted(scratch.glob("*.log")):  # e.g. the pytest shards' output
        text = child_log.read_bytes().decode("utf-8", errors="replace")
        if len(text) > CHILD_LOG_CHARS:  # the returned files are capped (16 MiB each)
            text = f"[... {len(text) - CHILD_LOG_CHARS} characters cut ...]\n" + \
                text[-CHILD_LOG_CHARS:]
        log.write(f"\n----- {step.name}: {child_log.name} -----\n{text}")
    log.flush()
    result = {"status": status, "seconds": round(seconds, 1), "records": read_records(records)}
    shutil.rmtree(work, ignore_errors=True)
    return result


def run_phase(phase: str, steps: list, budget_s: float, out: Path, dry: bool,
              echo=print) -> dict:
    """Runs ``steps`` in order within ``budget_s``; the summary is in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = load_summary(out / "gpu_suite.json", dry)
    state = {"budget_s": budget_s, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
             "elapsed_s": 0.0, "finished": False,
             "steps": {s.name: {"status": "pending", "estimate_s": s.estimate_s}
                       for s in steps}}
    summary["phases"][phase] = state
    start = time.time()
    ctx_args = ["--dry-run"] if dry else []
    ctx_args += ["--summary", str(out / "gpu_suite.json")]
    with open(out / "gpu_suite.log", "a") as log:
        log.write(f"===== phase {phase}, budget {budget_s:.0f} s, "
                  f"{'dry run' if dry else 'GPU'} =====\n")
        for step in steps:
            entry = state["steps"][step.name]
            left = budget_s - (time.time() - start) - RESERVE_S
            if left < step.estimate_s and not dry:
                entry.update(status="skipped",
                             reason=f"would not fit: estimated {step.estimate_s:.0f} s, "
                                    f"{max(left, 0):.0f} s left of the budget")
                echo(f"[{phase}] {step.name}: skipped ({entry['reason']})")
                write_summary(out, summary)
                continue
            deadline = max(1.0, min(left, max(step.min_deadline_s, DEADLINE_FACTOR *
                                              step.estimate_s + DEADLINE_SLACK_S)))
            entry.update(status="running", deadline_s=round(deadline))
            state["elapsed_s"] = round(time.time() - start, 1)
            write_summary(out, summary)
            echo(f"[{phase}] {step.name}: running (estimate {step.estimate_s:.0f} s, "
                 f"deadline {deadline:.0f} s)")

            def partial(records, entry=entry):
                entry.update(gpu_report.digest(records))
                state["elapsed_s"] = round(time.time() - start, 1)
                write_summary(out, summary)

            result = run_step(step, deadline, ctx_args, log, partial)
            entry.update(status=result["status"], seconds=result["seconds"],
                         **gpu_report.digest(result["records"]))
            if result["status"] == "failed":
                entry["error"] = _last_error(out / "gpu_suite.log", step.name)
            state["elapsed_s"] = round(time.time() - start, 1)
            write_summary(out, summary)
            echo(f"[{phase}] {step.name}: {result['status']} in {result['seconds']:.0f} s"
                 + (f" ({entry['error']})" if entry.get("error") else ""))
        state["finished"] = True
        state["elapsed_s"] = round(time.time() - start, 1)
        write_summary(out, summary)
    return summary


def _last_error(log_path: Path, step: str) -> str:
    """The exception line the step's process printed last (its traceback is in the log)."""
    text = log_path.read_text().split(f"===== step {step} ")[-1]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(("RuntimeError", "Error", "Exception")) or ": " in line and \
                line.split(":")[0].endswith(("Error", "Exception")):
            return line.strip()[:500]
    return lines[-1].strip()[:500] if lines else "no output"


def _step_main(args) -> int:
    """The child process of one step."""
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
    import gpu_steps

    module, function = args.run_step.split(":")
    fn = getattr(importlib.import_module(module), function)
    ctx = gpu_steps.Context(dry=args.dry_run, records=Path(args.records),
                            scratch=Path(args.scratch), summary=Path(args.summary))
    fn(ctx)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="fastcells' GPU suite: tests and benchmarks for a lent GPU, within a "
                    "budget (module docstring: how to run it on the device tool)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=(*PHASES, "all"), default="all",
                        help="tests, bench, or all (both, one after the other; default)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu" / "run"),
                        help="folder for gpu_suite.{json,md,log} (on the device: $OUT)")
    parser.add_argument("--budget", type=float,
                        help="seconds for the phase (default: tests 420, bench 540; with "
                             "--phase all, each phase its default)")
    parser.add_argument("--dry-run", action="store_true",
                        help="every step on this CPU with tiny sizes, CUDA-only calls skipped")
    parser.add_argument("--plan", action="store_true",
                        help="print the steps, their H200 estimates and the budgets; run "
                             "nothing")
    parser.add_argument("--run-step", help=argparse.SUPPRESS)
    parser.add_argument("--records", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--summary", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_step:
        return _step_main(args)
    if args.budget is not None and args.budget <= 0:
        parser.error(f"--budget must be a positive number of seconds, got {args.budget}")
    phases = PHASES if args.phase == "all" else (args.phase,)
    budgets = {p: (args.budget if args.budget is not None else DEFAULT_BUDGET[p])
               for p in PHASES}
    if args.plan:
        print(plan_text({p: budgets[p] for p in PHASES}))
        return 0
    out = Path(args.out)
    summary = None
    for phase in phases:
        summary = run_phase(phase, STEPS[phase], budgets[phase], out, args.dry_run)
    print("\n" + gpu_report.render_summary(summary), flush=True)
    failed = [f"{p}/{n}" for p in phases for n, s in summary["phases"][p]["steps"].items()
              if s["status"] in ("failed", "timeout")]
    if failed:
        print(f"steps that failed or ran out of time: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
