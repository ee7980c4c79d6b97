"""benchmarks/gpu_suite.py, without a GPU: its dry run (every step's own code on this CPU,
tiny sizes, Triton in the interpreter, CUDA-only calls recorded as skipped), its budget and
deadlines (fake steps), its plan, and the rendering of its results (gpu_report.py)."""
import importlib
import os
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _load(name):
    """A module of benchmarks/ (not a package: the suite runs them as scripts)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


suite = _load("gpu_suite")
report = _load("gpu_report")
steps = _load("gpu_steps")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite_dry")
    started = time.time()
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_suite.py"), "--dry-run",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    return out, proc, time.time() - started


def test_dry_run_runs_every_step(dry_run):
    out, proc, seconds = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(suite.FILES)  # at most 4 files
    summary = json.loads((out / "gpu_suite.json").read_text())
    assert summary["dry_run"] is True and summary["schema"] == report.SCHEMA
    assert list(summary["phases"]) == list(suite.PHASES)
    for name, phase in summary["phases"].items():
        assert phase["finished"]
        assert list(phase["steps"]) == [s.name for s in suite.STEPS[name]]
        for sname, step in phase["steps"].items():
            assert step["status"] == "ok", (name, sname, step.get("error"))
    tests, bench = summary["phases"]["tests"]["steps"], summary["phases"]["bench"]["steps"]
    # CUDA-only work is recorded as not done, never silently dropped
    assert any("CUDA extension" in s["what"] for s in tests["build"]["skipped"])
    assert tests["build"]["figures"]["cuda_toolkit"]["home"]  # found through the wrapper
    assert tests["imports"]["figures"]["triton_smoke"].startswith("ok")
    assert tests["imports"]["figures"]["fastcells.kernels"] == str((ROOT / "kernels").resolve())
    assert any("graph capture" in s["what"] for s in bench["cuda_graphs"]["skipped"])
    # the sharded pytest run: every test once, outcomes counted from the records
    counts = tests["gpu_tests"]["tests"]
    assert counts["passed"] > 0 and counts["failed"] == counts["error"] == 0
    # the benchmark steps' tables, Triton included (interpreter), and the auto rule
    rows = bench["kernels_small"]["bench"]["kernels"]["rows"]
    assert rows and all("triton" in r["times"] for r in rows)
    assert bench["train"]["bench"]["train"]["rows"][0]["model"] == "convlstm"
    assert bench["auto_rule"]["figures"]["auto_rule"]["convlstm"]["measured_first"] == "triton"
    assert bench["fused_conv"]["rows"]["fused_conv"][0]["ms"]["fused_fwd_bwd"] > 0
    assert bench["compiled"]["bench"]["compiled"]["rows"][0]["compile_s"] > 0
    assert (out / "gpu_suite.md").read_text() == report.render_summary(summary)
    assert "===== step gpu_tests" in (out / "gpu_suite.log").read_text()


def test_dry_run_renders_into_results_and_readme(dry_run, tmp_path):
    out, proc, _ = dry_run
    assert proc.returncode == 0
    results = tmp_path / "gpu"
    results.mkdir()
    (results / "gpu_suite.json").write_text((out / "gpu_suite.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold\n{report.END}\nrest\n")
    stale = report.render(results, readme)
    assert {Path(p).name for p in stale} == {"gpu_suite.md", "cuda_kernels.md", "cuda_train.md",
                                            "cuda_compiled.md", "README.md"}
    assert report.render(results, readme, check=True) == []
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    assert "gpu_tests:" in text and "passed" in text
    kernels_md = (results / "cuda_kernels.md").read_text()
    assert "small" in kernels_md and "large" in kernels_md  # both steps' sizes in one table
    with pytest.raises(SystemExit, match="dry run"):
        report.merge([out], tmp_path / "merged")


def test_merge_names_the_commit_whose_sources_ran(tmp_path):
    def call(phase, digest):
        machine = {"gpu": "NVIDIA H200", "source_digest": digest, "commit": None}
        return {"schema": report.SCHEMA, "dry_run": False, "phases": {phase: {
            "budget_s": 1, "elapsed_s": 1, "finished": True, "steps": {"machine": {
                "status": "ok", "estimate_s": 5, "figures": {"machine": machine}}}}}}

    for phase, digest in (("tests", report.source_digest()), ("bench", "0" * 16)):
        (tmp_path / phase).mkdir()
        (tmp_path / phase / "gpu_suite.json").write_text(json.dumps(call(phase, digest)))
    out = report.merge([tmp_path / "tests", tmp_path / "bench"], tmp_path / "results")
    merged = json.loads(out.read_text())
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True).stdout.strip()
    tests_commit = merged["phases"]["tests"]["steps"]["machine"]["figures"]["machine"]["commit"]
    assert tests_commit.startswith(head)
    assert "differ" in merged["phases"]["bench"]["steps"]["machine"]["figures"]["machine"][
        "commit"]


def test_committed_gpu_results_are_rendered_from_their_json():
    """README's GPU block and benchmarks/results/gpu/*.md are what `make gpu-results`
    renders from the committed JSON (with none yet: the block says so)."""
    assert report.render(check=True) == [], "run `make gpu-results`"


def _fake(name, estimate):
    return suite.Step(name, f"tests.gpu_suite_fake_steps:{name}", estimate, "test")


def test_budget_deadlines_and_skips(tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "RESERVE_S", 0.0)
    monkeypatch.setattr(suite, "POLL_S", 0.5)
    monkeypatch.setattr(suite, "DEADLINE_SLACK_S", 0.0)
    plan = [_fake("quick", 1), _fake("broken", 1), _fake("slow", 3),
            suite.Step("huge", "tests.gpu_suite_fake_steps:quick", 10_000, "never fits")]
    started = time.time()
    summary = suite.run_phase("bench", plan, budget_s=60, out=tmp_path, dry=False,
                              echo=lambda *a: None)
    assert time.time() - started < 40  # the slow step was killed at 2 x 3 s
    state = summary["phases"]["bench"]
    s = state["steps"]
    assert state["finished"]
    assert s["quick"]["status"] == "ok" and s["quick"]["figures"] == {"answer": 42}
    assert s["broken"]["status"] == "failed" and "broken on purpose" in s["broken"]["error"]
    assert s["broken"]["figures"] == {"partial": 1}  # what it emitted before failing
    assert s["slow"]["status"] == "timeout" and s["slow"]["deadline_s"] == 6
    assert s["slow"]["figures"] == {"before_the_deadline": "kept"}  # partial output kept
    assert s["huge"]["status"] == "skipped" and "would not fit" in s["huge"]["reason"]
    on_disk = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert on_disk == json.loads(json.dumps(summary, default=str))
    text = (tmp_path / "gpu_suite.md").read_text()
    assert "| huge | skipped |" in text and "| slow | timeout |" in text


def test_a_second_phase_joins_the_same_summary(tmp_path):
    for phase in ("tests", "bench"):
        suite.run_phase(phase, [_fake("quick", 1)], 60, tmp_path, dry=False,
                        echo=lambda *a: None)
    summary = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert list(summary["phases"]) == ["tests", "bench"]
    with pytest.raises(SystemExit, match="empty --out"):  # a GPU run into a dry run's folder
        suite.run_phase("tests", [_fake("quick", 1)], 60, tmp_path, dry=True)


def test_plan_fits_both_phases_in_one_call_each():
    text = suite.plan_text()
    assert text.count(": fits in") == 2 and "DOES NOT FIT" not in text
    for phase in suite.PHASES:
        total = sum(s.estimate_s for s in suite.STEPS[phase]) + suite.RESERVE_S
        assert total <= suite.DEFAULT_BUDGET[phase] <= 540  # one 600 s call with margin
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_suite.py"), "--plan"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == text.strip()


def test_auto_rule_counts_the_fastest_fused_backend_per_cell():
    rows = [
        {"cell": "convlstm", "kind": "step", "mode": "fwd+bwd",
         "times": {"reference": {"median": 3.0}, "triton": {"median": 2.0},
                   "cuda": {"median": 1.0}}},
        {"cell": "convlstm", "kind": "step", "mode": "fwd+bwd",
         "times": {"triton": {"median": 0.5}, "cuda": {"median": 1.0}}},
        {"cell": "convlstm", "kind": "step", "mode": "fwd+bwd",
         "times": {"triton": {"median": 0.4}, "cuda": {"median": 1.0}}},
        {"cell": "convlstm", "kind": "gates", "mode": "fwd+bwd",  # not a step: ignored
         "times": {"triton": {"median": 9.0}, "cuda": {"median": 0.1}}},
        {"cell": "mklstm", "kind": "step", "mode": "fwd",  # forward only: ignored
         "times": {"triton": {"median": 1.0}, "cuda": {"median": 2.0}}},
    ]
    rule = steps.measured_auto_rule(rows, {"convlstm": ("cuda", "triton")})
    assert rule == {"convlstm": {"wins": {"cuda": 1, "triton": 2}, "measured_first": "triton",
                                 "preference": ["cuda", "triton"]}}


def test_digest_counts_test_outcomes():
    records = [
        {"kind": "test", "nodeid": "a", "when": "call", "outcome": "passed", "message": ""},
        {"kind": "test", "nodeid": "b", "when": "call", "outcome": "failed", "message": "boom"},
        {"kind": "test", "nodeid": "c", "when": "setup", "outcome": "failed", "message": "fx"},
        {"kind": "test", "nodeid": "d", "when": "setup", "outcome": "skipped",
         "message": "no GPU"},
    ]
    tests = report.digest(records)["tests"]
    assert (tests["passed"], tests["failed"], tests["error"], tests["skipped"]) == (1, 1, 1, 1)
    assert [f["test"] for f in tests["failures"]] == ["b", "c"]
    assert tests["skip_reasons"] == {"no GPU": 1}


def test_gpu_test_shards_partition_the_tests(tmp_path):
    """FASTCELLS_TEST_SHARD=i/n (tests/conftest.py) splits a run into disjoint parts that
    together are the whole."""
    def collected(env):
        proc = subprocess.run([sys.executable, "-m", "pytest", "tests/test_ring_history.py",
                               "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env})
        return [ln for ln in proc.stdout.splitlines() if "::" in ln]

    whole = collected({"FASTCELLS_TEST_SHARD": ""})  # empty: not sharded (tests/sharded.py)
    parts = [collected({"FASTCELLS_TEST_SHARD": f"{i}/3"}) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(whole) and len(whole) >= 3
    assert all(parts)
