"""The GPU suite's results: its summary digest, Markdown, and the committed files.

benchmarks/gpu_suite.py calls :func:`digest` and :func:`render_summary` while it runs. On
this machine, after a lent GPU ran the suite (its module docstring says how)::

    python3 benchmarks/gpu_report.py merge DIR [DIR ...]   # the calls' gpu_suite.json files
    python3 benchmarks/gpu_report.py render [--check]      # = make gpu-results

``merge`` combines the phases of the calls' summaries into
``benchmarks/results/gpu/gpu_suite.json`` (the later call's phase wins) and renders.
``render`` writes, from that JSON alone, ``benchmarks/results/gpu/gpu_suite.md`` (every
step), ``cuda_kernels.md``, ``cuda_train.md`` and ``cuda_compiled.md`` (the
:mod:`fastcells.bench` reports of the benchmark steps) and README's GPU block; ``--check``
only says whether they are up to date (tests/test_gpu_suite.py runs it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCHEMA = 1
RESULTS = ROOT / "benchmarks" / "results" / "gpu"
README = ROOT / "README.md"
START = "<!-- gpu-results:start -->"
END = "<!-- gpu-results:end -->"
MAX_FAILURES = 200  # listed per step; the counts are always complete


# ----------------------------------------------------------------------------- provenance
SOURCE_GLOBS = ("setup.py", "fastcells/**/*.py", "kernels/*.py", "csrc/**/*.*",
                "benchmarks/*.py", "tests/*.py", "tests/*.cpp")


def source_digest(root: Path = ROOT) -> str:
    """A hash of the sources a run used. The device machine gets the working tree without
    .git, so a run cannot name its commit; ``merge`` compares this digest with the checkout's
    to record the commit (or that the sources differed)."""
    import hashlib

    h = hashlib.sha256()
    files = sorted({p for g in SOURCE_GLOBS for p in root.glob(g)
                    if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".so"})
    for path in files:
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _record_commit(summary: dict) -> None:
    """Each phase's machine record gets the commit whose sources it ran, if this checkout
    holds exactly those sources (run merge from the checkout that was sent)."""
    import subprocess

    here = source_digest()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=ROOT, text=True, capture_output=True).stdout.strip())
    for phase in summary["phases"].values():
        m = phase["steps"].get("machine", {}).get("figures", {}).get("machine")
        if not m:
            continue
        if m.get("source_digest") == here:
            commit = head + (" + uncommitted changes" if dirty else "")
        else:
            commit = "unknown (its sources differ from this checkout)"
        m["commit"] = commit
        for step in phase["steps"].values():  # the fastcells.bench tables' machine lines
            for table in step.get("bench", {}).values():
                if "start" in table:
                    table["start"]["machine"]["commit"] = commit


# -------------------------------------------------------------------------------- digest
def digest(records: list) -> dict:
    """A step's summary entry from its records (gpu_steps' record kinds)."""
    out: dict = {}
    for rec in records:
        kind = rec.get("kind")
        if kind == "figure":
            out.setdefault("figures", {})[rec["name"]] = rec["value"]
        elif kind == "skipped":
            out.setdefault("skipped", []).append({"what": rec["what"], "why": rec["why"]})
        elif kind == "row":
            out.setdefault("rows", {}).setdefault(rec["table"], []).append(rec["data"])
        elif kind == "bench":
            table = out.setdefault("bench", {}).setdefault(rec["table"], {"rows": [],
                                                                          "memory": []})
            if rec["part"] == "start":
                table["start"] = rec["data"]
            else:
                table["rows" if rec["part"] == "row" else "memory"].append(rec["data"])
        elif kind == "test":
            tests = out.setdefault("tests", {"passed": 0, "failed": 0, "skipped": 0,
                                             "error": 0, "failures": [], "skip_reasons": {}})
            outcome = rec["outcome"]
            if outcome == "failed" and rec.get("when") != "call":
                outcome = "error"  # a fixture (setup/teardown) failed
            tests[outcome] = tests.get(outcome, 0) + 1
            if outcome in ("failed", "error") and len(tests["failures"]) < MAX_FAILURES:
                tests["failures"].append({"test": rec["nodeid"], "message": rec["message"]})
            if outcome == "skipped":
                reason = rec["message"] or "no reason"
                tests["skip_reasons"][reason] = tests["skip_reasons"].get(reason, 0) + 1
    return out


# --------------------------------------------------------------------------- bench tables
def bench_result(summary: dict, table: str):
    """The :mod:`fastcells.bench` result of ``table`` ("kernels", "train", "compiled") from
    every bench step that emitted it, or None."""
    from fastcells.bench import kernels, training

    start, rows, memory = None, [], []
    for phase in summary.get("phases", {}).values():
        for step in phase["steps"].values():
            part = step.get("bench", {}).get(table)
            if not part or "start" not in part:
                continue
            if start is None:
                start = json.loads(json.dumps(part["start"]))
            else:  # sizes of later steps join the config
                start["config"].setdefault("sizes", {}).update(
                    part["start"]["config"].get("sizes", {}))
            rows += part["rows"]
            memory += part["memory"]
    if start is None:
        return None
    if table == "train":
        return training.assemble(start, rows)
    return kernels.assemble(start, rows, memory)


def bench_reports(summary: dict) -> dict:
    """``{file name: Markdown}`` of the bench tables this summary holds."""
    from fastcells.bench import kernels, training

    out = {}
    for table, name, fmt in (("kernels", "cuda_kernels.md", kernels.format_kernels),
                             ("train", "cuda_train.md", training.format_training),
                             ("compiled", "cuda_compiled.md", kernels.format_kernels)):
        result = bench_result(summary, table)
        if result is not None:
            out[name] = fmt(result) + "\n"
    return out


# ------------------------------------------------------------------------------ Markdown
def _machine(summary: dict) -> dict:
    for phase in summary.get("phases", {}).values():
        m = phase["steps"].get("machine", {}).get("figures", {}).get("machine")
        if m:
            return m
    return {}


def machine_line(m: dict) -> str:
    if not m:
        return "Machine: not recorded (the machine step did not run)."
    gpu = (f"{m.get('gpu')} (sm_{str(m.get('capability', '?')).replace('.', '')}, "
           f"{m.get('multiprocessors')} SMs, {m.get('memory_gib')} GiB)" if m.get("gpu")
           else "no GPU (dry run)")
    return (f"{gpu}; driver {m.get('nvidia-smi')}; torch {m.get('torch')} (CUDA "
            f"{m.get('cuda_runtime')}), triton {m.get('triton')}, numpy {m.get('numpy')}, "
            f"Python {m.get('python')}, {m.get('cpu_count')} CPUs; {m.get('nvcc')}; "
            f"{m.get('date')}, commit {m.get('commit')}.")


def _fmt_value(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt_value(v)}" for k, v in value.items())
    return str(value)


def render_summary(summary: dict) -> str:
    """gpu_suite.md: every phase and step, the tests' outcome, the figures and tables."""
    title = "fastcells GPU suite" + (" — dry run on the CPU" if summary.get("dry_run") else "")
    lines = [f"# {title}", "", machine_line(_machine(summary)), ""]
    for name, phase in summary.get("phases", {}).items():
        lines += [f"## Phase `{name}`: budget {phase['budget_s']:.0f} s, "
                  f"{phase['elapsed_s']:.0f} s used"
                  + ("" if phase.get("finished") else " (**did not finish**: killed or still "
                                                      "running when this was written)"), "",
                  "| step | status | seconds | estimate (H200) | notes |", "|---|---|---|---|---|"]
        for sname, step in phase["steps"].items():
            notes = step.get("reason") or step.get("error") or ""
            if step.get("skipped"):
                notes = (notes + "; " if notes else "") + f"{len(step['skipped'])} parts skipped"
            lines.append(f"| {sname} | {step['status']} | {step.get('seconds', '—')} | "
                         f"{step['estimate_s']:.0f} | {notes.replace('|', '/')} |")
        lines.append("")
        for sname, step in phase["steps"].items():
            lines += _step_details(sname, step)
    for name, text in bench_reports(summary).items():
        body = text.split("\n", 1)[1] if text.startswith("# ") else text
        lines += [f"## {name[:-3]}", body.replace("\n## ", "\n### ")]
    return "\n".join(lines).rstrip() + "\n"


def _step_details(name: str, step: dict) -> list:
    lines = []
    tests = step.get("tests")
    if tests:
        lines += [f"### {name}: {tests['passed']} passed, {tests['failed']} failed, "
                  f"{tests['error']} errors, {tests['skipped']} skipped", ""]
        for f in tests["failures"]:
            lines.append(f"- FAILED `{f['test']}`: {f['message']}")
        if tests["failures"]:
            lines.append("")
        for reason, n in sorted(tests["skip_reasons"].items(), key=lambda kv: -kv[1]):
            lines.append(f"- {n} skipped: {reason}")
        if tests["skip_reasons"]:
            lines.append("")
    figures = {k: v for k, v in step.get("figures", {}).items() if k != "machine"}
    if figures:
        lines += [f"### {name}: figures", ""]
        lines += [f"- {k}: {_fmt_value(v)}" for k, v in figures.items()] + [""]
    for table, rows in step.get("rows", {}).items():
        lines += [f"### {table}", ""] + _rows_table(rows) + [""]
    if step.get("skipped"):
        lines += [f"### {name}: not done here", ""]
        lines += [f"- {s['what']}: {s['why']}" for s in step["skipped"]] + [""]
    return lines


def _rows_table(rows: list) -> list:
    """Rows with a ``ms`` dict of timings, as a table (a column per timing)."""
    keys = [k for k in rows[0] if k != "ms"]
    timings = list(rows[0].get("ms", {}))
    lines = ["| " + " | ".join(keys + [f"{t} (ms)" for t in timings]) + " |",
             "|" + "---|" * (len(keys) + len(timings))]
    for r in rows:
        lines.append("| " + " | ".join([str(r[k]) for k in keys]
                                       + [f"{r['ms'].get(t, float('nan')):.3f}"
                                          for t in timings]) + " |")
    return lines


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def readme_block(results: Path = RESULTS) -> str:
    """README's GPU block (markers included) from ``results/gpu_suite.json``."""
    path = results / "gpu_suite.json"
    lines = [START, f"<!-- generated by `make gpu-results` from {_rel(path)}; do not edit -->",
             ""]
    if not path.exists():
        lines += ["No GPU run yet: no session has been lent a GPU. The first one runs "
                  "`benchmarks/gpu_suite.py` (its docstring says how) and commits what comes "
                  "back; until then every GPU figure is open.", "", END]
        return "\n".join(lines)
    summary = json.loads(path.read_text())
    lines += [machine_line(_machine(summary)), ""]
    for name, phase in summary["phases"].items():
        done = sum(s["status"] == "ok" for s in phase["steps"].values())
        lines.append(f"- phase `{name}`: {done} of {len(phase['steps'])} steps ok in "
                     f"{phase['elapsed_s']:.0f} s; " + ", ".join(
                         f"{n} {s['status']}" for n, s in phase["steps"].items()
                         if s["status"] != "ok"))
        for sname, step in phase["steps"].items():
            if step.get("tests"):
                t = step["tests"]
                lines.append(f"  - {sname}: {t['passed']} passed, {t['failed']} failed, "
                             f"{t['error']} errors, {t['skipped']} skipped")
            for key in ("copy_GBps_float32", "auto_rule"):
                if key in step.get("figures", {}):
                    lines.append(f"  - {key}: {_fmt_value(step['figures'][key])}")
    lines += ["", f"Every step, table and failure: `{_rel(results / 'gpu_suite.md')}`.", "", END]
    return "\n".join(lines)


# --------------------------------------------------------------------------------- files
def rendered_files(results: Path = RESULTS) -> dict:
    """``{path: text}`` of every file rendered from ``results/gpu_suite.json``."""
    path = results / "gpu_suite.json"
    if not path.exists():
        return {}
    summary = json.loads(path.read_text())
    files = {results / "gpu_suite.md": render_summary(summary)}
    files.update({results / name: text for name, text in bench_reports(summary).items()})
    return files


def update_readme(readme: Path, block: str, check: bool) -> bool:
    """Puts ``block`` between the markers of ``readme``; True when it changed (or would)."""
    text = readme.read_text()
    if text.count(START) != 1 or text.count(END) != 1:
        raise SystemExit(f"{readme} must hold {START} and {END} once each")
    new = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    if new != text and not check:
        readme.write_text(new)
    return new != text


def render(results: Path = RESULTS, readme: Path = README, check: bool = False) -> list:
    """Writes (or with ``check`` only compares) every rendered file; returns those that were
    out of date."""
    stale = []
    for path, text in rendered_files(results).items():
        if not path.exists() or path.read_text() != text:
            stale.append(str(path))
            if not check:
                path.write_text(text)
    if update_readme(readme, readme_block(results), check):
        stale.append(str(readme))
    return stale


def merge(dirs: list, results: Path = RESULTS) -> Path:
    """The phases of each folder's gpu_suite.json (in order, later wins) into ``results``."""
    merged = None
    for d in dirs:
        path = Path(d) / "gpu_suite.json" if Path(d).is_dir() else Path(d)
        summary = json.loads(path.read_text())
        if summary.get("schema") != SCHEMA:
            raise SystemExit(f"{path}: not a gpu_suite summary of schema {SCHEMA}")
        if summary.get("dry_run"):
            raise SystemExit(f"{path} is a dry run: only GPU runs are committed")
        if merged is None:
            merged = summary
        else:
            merged["phases"].update(summary["phases"])
    _record_commit(merged)
    results.mkdir(parents=True, exist_ok=True)
    out = results / "gpu_suite.json"
    out.write_text(json.dumps(merged, indent=1) + "\n")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="merge device-call folders into the results, render")
    m.add_argument("dirs", nargs="+", help="folders (or gpu_suite.json files) of the calls")
    r = sub.add_parser("render", help="render the committed JSON (Markdown, README block)")
    r.add_argument("--check", action="store_true", help="only report what is out of date")
    args = parser.parse_args(argv)
    if args.command == "merge":
        print(f"wrote {merge(args.dirs)}")
    stale = render(check=getattr(args, "check", False))
    if getattr(args, "check", False):
        if stale:
            print("out of date (run `make gpu-results`):\n  " + "\n  ".join(stale))
            return 1
        print("GPU results up to date")
        return 0
    print("rendered: " + (", ".join(stale) if stale else "nothing changed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
