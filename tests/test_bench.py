"""The benchmark command's plumbing on minuscule sizes: structure and finite numbers of every
requested row, Markdown tables, README rendering, and clear errors. Speed is never asserted
(benchmarks/ measures it)."""
import json
import math

import pytest
import torch

from fastcells.bench import cli as bench_cli
from fastcells.bench import floors, readme, workloads
from fastcells.cli import main as fastcells_main

from .conftest import requires_cpp

TINY = ["--quick", "--size", "1", "4", "8", "8", "--repeats", "1", "--no-progress"]
TINY_MODEL = ["--quick", "--batch", "1", "--input-len", "2", "--pred-len", "1",
              "--model-arg", "hidden_size=4", "--model-arg", "num_layers=2",
              "--train-repeats", "1", "--no-progress"]


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def kernel_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernels")
    assert bench_cli.main(["kernels", *TINY, "--out", str(out)]) == 0
    return json.loads((out / "cpu_kernels.json").read_text()), (out / "cpu_kernels.md").read_text()


@requires_cpp
def test_kernels_rows_complete_and_finite(kernel_run):
    result, markdown = kernel_run
    assert result["device"] == "cpu" and result["machine"]["processor"]
    assert all(_finite_positive(r[k]) for r in result["roofs"].values()
               for k in ("bandwidth", "matmul"))
    assert all(r["tf32"] is False for r in result["roofs"].values())  # a CPU run
    keys = {(r["cell"], r["kind"], r["mode"]) for r in result["rows"]}
    assert keys == {(c, k, m) for c in workloads.CELLS for k in ("gates", "step")
                    for m in workloads.MODES}
    for r in result["rows"]:
        expected = {"reference", "cpp"} | ({"cpp_memeff"} if r["kind"] == "step" else set())
        assert set(r["times"]) == expected  # --quick: no compiled baseline
        for v, t in r["times"].items():
            assert _finite_positive(t["median"]) and t["min"] <= t["median"] and t["n"] == 1
            assert _finite_positive(r["fraction_of_floor"][v])
        assert _finite_positive(r["floor_s"]) and _finite_positive(r["bytes"])
        assert (r["flops"] > 0) == (r["kind"] == "step")
        line = f"| {r['cell']} | {r['kind']} | {r['mode']} |"
        assert line in markdown
    assert {e["cell"] for e in result["memory"]} == set(workloads.CELLS)
    for e in result["memory"]:
        for table in ("step_saved", "stack_saved"):
            assert set(e[table]) == {"reference", "cpp", "cpp_memeff"}
            assert all(isinstance(b, int) and b > 0 for b in e[table].values())
    assert "## Saved for backward" in markdown and "compiled` baseline was not measured" in markdown


def test_floors_count_the_documented_traffic():
    size = workloads.Size(1, 2, 4, 4)
    plane = 2 * 16 * 4
    assert floors.gate_bytes("convlstm", size) == {"fwd": 11 * plane, "fwd+bwd": 24 * plane}
    assert floors.gate_bytes("stlstm", size)["fwd+bwd"] == 63 * plane
    assert floors.gate_bytes("mklstm", size, torch.bfloat16)["fwd+bwd"] == 51 * plane // 2
    # ConvLSTM step: one 2C -> 4C 3x3 convolution per pixel forward, 3x that with backward
    flops = floors.step_flops("convlstm", workloads.Size(2, 8, 8, 8))
    assert flops["fwd"] == 2 * (2 * 64) * (4 * 8) * (2 * 8) * 9
    assert flops["fwd+bwd"] == 3 * flops["fwd"]


@requires_cpp
def test_kernels_compiled_baseline():
    args = ["kernels", *TINY, "--cells", "convlstm", "--compile", "--compile-backend",
            "aot_eager", "--variants", "reference", "compiled", "cpp"]
    result = _run_json(args)
    for r in result["rows"]:
        assert set(r["times"]) == {"reference", "compiled", "cpp"}
        assert _finite_positive(r["compile_s"])
    assert all("compiled" not in e["step_saved"] for e in result["memory"])


@requires_cpp
def test_train_table(tmp_path):
    assert bench_cli.main(["train", *TINY_MODEL, "--models", "convlstm", "predrnn",
                           "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "cpu_train.json").read_text())
    markdown = (tmp_path / "cpu_train.md").read_text()
    assert result["config"]["batch"] == 1 and result["config"]["memory"] == "saved for backward"
    assert [r["model"] for r in result["rows"]] == ["convlstm", "predrnn"]
    for r in result["rows"]:
        assert r["frames"] == [1, 3, 1, 64, 64] and r["params"] > 0 and r["flops"] > 0
        assert set(r["variants"]) == {"eager", "fused", "fused_memeff", "fused_onednn"}
        assert r["variants"]["fused"]["backend"] == "cpp"
        for v in r["variants"].values():
            assert _finite_positive(v["time_s"]["median"]) and _finite_positive(v["saved_bytes"])
        for v in ("eager", "fused (cpp)", "fused_memeff (cpp)", "fused_onednn (cpp)"):
            assert f"| {r['model']} | {v} |" in markdown
    assert "| Model | Variant | Params | Memory (saved for backward) | FLOPs | Time / iter" \
        in markdown
    assert "Not the paper's setting" in markdown and result["targets"] == []


def test_fused_onednn_iteration_forces_onednn():
    """The fused_onednn variant's iteration runs with every convolution on oneDNN, whatever
    the setting around it, and leaves that setting as it was."""
    import fastcells as fc
    from fastcells.bench import training

    seen = []

    class Opt:
        def zero_grad(self, set_to_none=True):
            pass

        def step(self):
            pass

    def loss(frames):
        seen.append(fc.get_conv_algorithm())
        return frames.sum()

    frames = torch.zeros(2, requires_grad=True)
    with fc.conv_algorithm(forward="matmul", input="auto", weight="winograd"):
        training.iteration(loss, Opt(), frames, "onednn")()
        training.iteration(loss, Opt(), frames)()
        assert fc.get_conv_algorithm() == {"forward": "matmul", "input": "auto",
                                           "weight": "winograd"}
    assert seen == [{p: "onednn" for p in ("forward", "input", "weight")},
                    {"forward": "matmul", "input": "auto", "weight": "winograd"}]


@requires_cpp
def test_train_compiled_model_scope():
    result = _run_json(["train", *TINY_MODEL, "--models", "convlstm", "--model-arg",
                        "num_layers=1", "--compile", "--compile-backend", "aot_eager",
                        "--train-variants", "eager", "compiled", "--no-flops"])
    v = result["rows"][0]["variants"]
    assert set(v) == {"eager", "compiled"} and _finite_positive(v["compiled"]["compile_s"])
    assert _finite_positive(v["compiled"]["time_s"]["median"])
    assert result["rows"][0]["flops"] is None


def _run_json(args):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/r.json"
        assert bench_cli.main([*args, "--json", path]) == 0
        with open(path) as f:
            return json.load(f)


@requires_cpp
def test_readme_block_renders_and_updates(kernel_run, tmp_path):
    result, _ = kernel_run
    (tmp_path / "cpu_kernels.json").write_text(json.dumps(result))
    block = readme.render(tmp_path)
    assert block.startswith(readme.START) and block.endswith(readme.END)
    assert "### CPU" in block and "| convlstm | fp32 | cpp |" in block
    doc = tmp_path / "README.md"
    doc.write_text(f"# x\n\n{readme.START}\nstale\n{readme.END}\ntail\n")
    assert readme.update(doc, tmp_path, check=True) is True
    assert "stale" in doc.read_text()  # check only
    assert readme.update(doc, tmp_path) is True
    assert readme.update(doc, tmp_path, check=True) is False
    assert doc.read_text() == f"# x\n\n{block}\ntail\n"
    doc.write_text("no markers")
    with pytest.raises(ValueError, match="results:start"):
        readme.update(doc, tmp_path)
    floors_block = readme.render_floors(tmp_path)
    for r in result["rows"]:
        if r["mode"] == "fwd+bwd" and r["kind"] == "step":
            assert f"| fp32 | custom | {r['cell']} | cpp | " in floors_block
    notes = tmp_path / "NOTES.md"
    notes.write_text(f"{readme.FLOORS_START}\n{readme.FLOORS_END}\n")
    assert readme.update_notes(notes, tmp_path) is True
    assert notes.read_text() == floors_block + "\n"


@pytest.mark.parametrize("args, message", [
    (["kernels", "--size", "0", "4", "8", "8"], "expected an integer >= 1"),
    (["kernels", "--sizes", "small", "--size", "1", "4", "8", "8"], "not both"),
    (["kernels", "--variants", "fast"], "--variants"),
    (["kernels", "--cells", "gru"], "invalid choice"),
    (["train", "--models", "nope"], "unknown"),
    (["train", "--preset", "kth"], "has presets"),
    (["train", "--batch", "-1"], "expected an integer >= 1"),
    (["train", "--model-arg", "hidden_size"], "KEY=VALUE"),
    (["kernels", "--device", "tpu"], "--device"),
    (["--nonsense"], "unrecognized arguments"),
    (["train", "--quick", "--no-progress", "--models", "stlight"], "no recurrent cells"),
])
def test_bad_arguments_exit_with_a_message(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench_cli.main(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_gpu(capsys):
    with pytest.raises(SystemExit):
        bench_cli.main(["kernels", "--device", "cuda"])
    assert "no CUDA device" in capsys.readouterr().err


def test_triton_is_never_timed_on_cpu(monkeypatch):
    monkeypatch.setattr(workloads.backends, "supports", lambda b, d, t: True)
    assert "triton" not in workloads.fused_backends(torch.device("cpu"), torch.float32)
    assert "triton" in workloads.fused_backends(torch.device("cuda"), torch.float32)


def test_fastcells_bench_passes_options_through(capsys):
    assert fastcells_main(["bench", "readme", "--check", "--results",
                           str(readme.RESULTS_DIR)]) in (0, 1)
    assert "generated block" in capsys.readouterr().out
