"""benchmarks/gpu_suite.py's pieces that need no GPU: the measured auto rule read from a
kernel table in fastcells.bench's format, and the summary it renders."""
import importlib.util
import json
from pathlib import Path

import fastcells.bench  # noqa: F401  (the format the suite reads comes from there)

ROOT = Path(__file__).resolve().parents[1]


def _suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_auto_rule_counts_the_fastest_fused_backend_per_cell(tmp_path):
    suite = _suite()
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
    path = tmp_path / "cuda_kernels.json"
    path.write_text(json.dumps({"rows": rows}))
    rule = suite.measured_auto_rule(path)
    assert set(rule) == {"convlstm"}
    assert rule["convlstm"]["wins"] == {"cuda": 1, "triton": 2}
    assert rule["convlstm"]["measured_first"] == "triton"
    assert rule["convlstm"]["preference"] == ["cuda", "triton"]
    text = suite.render({"machine": {"gpu": "test"}, "steps": {"tests": {"rc": 0, "seconds": 1}},
                         "copy_bandwidth_gbs": 4300.0, "auto_rule": rule})
    assert "| convlstm | triton" in text and "4300 GB/s" in text
