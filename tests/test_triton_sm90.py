"""Every Triton kernel of fastcells compiles for sm_90 (H100/H200), without a GPU.

The other Triton tests run the kernels in the interpreter, which never lowers them for a
GPU. Here tests/triton_sm90.py runs every launcher (convlstm_gates, dual_memory_gates,
output_gate, causal_lstm_gates, ghu_gates, ctt, conv_gates; forward and backward, each
variant) on CPU tensors in float32, bfloat16, float16 and float64, contiguous and
channels_last, captures each launch, and compiles every distinct specialization for sm_90
as a launch on an H100 would, then reads
registers and stack from cuobjdump. It runs in subprocesses without TRITON_INTERPRET (the
interpreter, which tests/conftest.py turns on for this process, replaces ``triton.jit``),
in parallel shards, once for all the tests of this module.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from fastcells import _ext

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_sm90.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cuobjdump() -> str:
    if not _ext.triton_available():
        return ""
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                        "cuobjdump")


pytestmark = pytest.mark.skipif(
    not os.path.exists(_cuobjdump()),
    reason="needs triton with its NVIDIA backend (ptxas, cuobjdump)")

DTYPES = ("fp32", "bf16", "fp16", "fp64")
LAYOUTS = ("contiguous", "channels_last")
CONVOLUTIONS = ("ctt.", "conv_gates.")  # float16 and float64 contiguous only
CONTIGUOUS_ONLY = ("ctt.forward N2M6", "ctt.backward N2M6")  # cases without channels_last

# Distinct specializations per kernel over all cases (dtypes x layouts x variants): a
# launcher that stops launching a kernel, or a change of what a launch specializes on,
# changes these. Variants: convlstm_gates with and without peepholes; stlstm with and
# without deltas; conv_gates with x and bias, or zx and peepholes; the CTT chain's
# (N, M) = (3, 3) and (2, 6) configurations, whose launches differ in their sources,
# biases, flips and the alignment of the weight slices. The convolution kernels (ctt,
# conv_gates) compile float16 and float64 contiguous only, and (2, 6) contiguous in
# float32, bfloat16 and float64 only (tests/triton_sm90.py).
SPECIALIZATIONS = {
    "convlstm_gates._forward_kernel": 16,
    "convlstm_gates._backward_kernel": 16,
    "dual_memory_gates._stlstm_forward_kernel": 16,
    "dual_memory_gates._stlstm_backward_kernel": 16,
    "dual_memory_gates._mklstm_forward_kernel": 8,
    "dual_memory_gates._mklstm_backward_kernel": 8,
    "output_gate._forward_kernel": 8,
    "output_gate._backward_kernel": 8,
    "causal_lstm_gates._c_forward_kernel": 8,
    "causal_lstm_gates._c_backward_kernel": 8,
    "causal_lstm_gates._m_forward_kernel": 8,
    "causal_lstm_gates._m_backward_kernel": 8,
    "causal_lstm_gates._output_forward_kernel": 8,
    "causal_lstm_gates._output_backward_kernel": 8,
    "ghu_gates._forward_kernel": 8,
    "ghu_gates._backward_kernel": 8,
    "ctt._conv_sum_kernel": 44,
    "ctt._wgrad_kernel": 21,
    "conv_gates._forward_kernel": 12,
}

# Kernels that must compile without spilling registers at B = 2, C = 32, 64x64 (STACK = 0
# in cuobjdump), with the exceptions below (bytes of stack allowed).
NO_SPILLS = ("convlstm_gates.", "dual_memory_gates.", "output_gate.", "conv_gates.",
             "causal_lstm_gates.", "ghu_gates.")
SPILLS_ALLOWED = {
    # float64 with zx and peepholes: spill stores around the calls of the float64
    # division's slow path (8 bytes contiguous; 16 in channels_last, not compiled here)
    ("conv_gates._forward_kernel", "fp64", "conv_gates.forward zx+peephole"): 16,
}

# (kernel, dtype) -> the exact error text of a known compile failure. None: every kernel
# compiles in every dtype, float64 tl.dot included (sm_90 has float64 MMA).
EXPECTED_FAILURES = {}


def _shards() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Runs tests/triton_sm90.py in parallel shards; the merged results."""
    tmp = tmp_path_factory.mktemp("sm90")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    shards = _shards()
    start = time.perf_counter()
    procs = []
    for i in range(shards):
        out = tmp / f"shard{i}.json"
        cmd = [sys.executable, SCRIPT, "--shard", f"{i}/{shards}", "--json", str(out)]
        procs.append((out, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True)))
    merged = {"results": [], "capture_errors": [], "kinds": None, "log": ""}
    for out, proc in procs:
        log, _ = proc.communicate(timeout=900)
        merged["log"] += log
        if not out.exists():
            pytest.fail(f"tests/triton_sm90.py exited {proc.returncode}:\n{log[-6000:]}")
        shard = json.loads(out.read_text())
        merged["results"] += shard["results"]
        merged["capture_errors"] = shard["capture_errors"]  # every shard captures every case
        merged["kinds"] = merged["kinds"] or shard.get("kinds")
    merged["seconds"] = time.perf_counter() - start
    from .triton_sm90 import table  # imports triton (interpreted here): nothing compiles

    merged["table"] = table(merged["results"])
    print(f"\n{merged['table']}\n{len(merged['results'])} specializations compiled for "
          f"sm_90 in {merged['seconds']:.0f} s ({shards} processes)")
    return merged


def test_every_launcher_launches_its_kernels(compiled):
    """Each launcher call launched the kernels it should, as often as it should, and as on
    a GPU (no interpreter workaround)."""
    assert compiled["capture_errors"] == [], "\n".join(compiled["capture_errors"])


def test_every_kernel_compiles_for_sm90(compiled):
    failed = {(r["kernel"], r["dtype"]): r["error"] for r in compiled["results"] if not r["ok"]}
    unexpected = {k: v for k, v in failed.items() if EXPECTED_FAILURES.get(k) != v}
    assert not unexpected, "\n".join(f"{k}: {v}" for k, v in unexpected.items())
    fixed = set(EXPECTED_FAILURES) - set(failed)
    assert not fixed, f"these compile now, remove them from EXPECTED_FAILURES: {fixed}"


def test_specializations(compiled):
    """Every kernel compiled in every dtype and both layouts, as many distinct
    specializations as expected. channels_last moves the unit stride (a constant), so a
    launcher's calls specialize apart in the two layouts: as many in each."""
    results = compiled["results"]
    counts = {}
    for r in results:
        counts[r["kernel"]] = counts.get(r["kernel"], 0) + 1
    assert counts == SPECIALIZATIONS, compiled["table"]
    for kernel in SPECIALIZATIONS:
        for dtype in DTYPES:
            rows = [r for r in results if r["kernel"] == kernel and r["dtype"] == dtype
                    and r["case"] not in CONTIGUOUS_ONLY]
            by_layout = {lay: sum(r["layout"] == lay for r in rows) for lay in LAYOUTS}
            if kernel.startswith(CONVOLUTIONS) and dtype in ("fp16", "fp64"):
                assert by_layout["contiguous"] > 0 == by_layout["channels_last"], by_layout
            else:
                assert by_layout["contiguous"] == by_layout["channels_last"] > 0, (
                    kernel, dtype, by_layout)


def test_gate_kernels_do_not_spill(compiled):
    """At 64x64 frames and C = 32, registers suffice (STACK 0 in cuobjdump -res-usage)."""
    spills = []
    for r in compiled["results"]:
        if r["ok"] and r["kernel"].startswith(NO_SPILLS):
            allowed = SPILLS_ALLOWED.get((r["kernel"], r["dtype"], r["case"]), 0)
            if r["STACK"] > allowed:
                spills.append(f"{r['kernel']} {r['case']} {r['dtype']} {r['layout']}: "
                              f"REG {r['REG']} STACK {r['STACK']}")
    assert not spills, "\n".join(spills)


def test_argument_kinds(compiled):
    """The specialization of every argument kind, as Triton's JIT makes it for sm_90."""
    kinds = compiled["kinds"]
    assert kinds["signature"] == {
        "x64": "*fp64", "y16": "*fp16", "out": "*bf16", "scale": "fp32", "one": "constexpr",
        "n16": "i32", "n": "i32", "big": "i64", "flag": "u1", "nothing": "constexpr",
        "ACC": "constexpr", "BLOCK": "constexpr"}
    assert kinds["constexprs"] == {"one": "1", "nothing": "None", "ACC": "fp64",
                                   "BLOCK": "64"}
    assert kinds["divisible"] == ["big", "n16", "out", "x64", "y16"]
    assert (kinds["num_warps"], kinds["num_stages"]) == (2, 2)
