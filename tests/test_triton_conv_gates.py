"""The fused convolution + ConvLSTM gates Triton op (fastcells.ops.conv_gates_triton) and the
``fused_conv`` cell option, against the eager reference. Without a GPU the kernel runs in the
Triton interpreter on CPU tensors; one test compiles it for sm_90 to check the GPU lowering."""
import json
import os
import subprocess
import sys

import pytest
import torch

import fastcells as fc
from fastcells import ops

from .conftest import requires_triton
from .helpers import RTOL, assert_close, make_cells, rel_error

pytestmark = requires_triton


def _tensor(shape, dtype, layout):
    """A tensor of ``shape`` in one of the layouts users hand us."""
    b, k, h, w = shape
    if layout == "contiguous":
        return torch.randn(shape, dtype=dtype)
    if layout == "channels_last":
        return torch.randn(shape, dtype=dtype).to(memory_format=torch.channels_last)
    if layout == "channel_slice":  # a slice of a larger buffer, read in place
        return torch.randn(b, k + 3, h, w, dtype=dtype)[:, 2:2 + k]
    if layout == "every_other":  # channel stride 2 H W, still one (H, W) index
        return torch.randn(b, 2 * k, h, w, dtype=dtype)[:, ::2]
    if layout == "transposed":  # H, W do not collapse: copied by the launcher
        return torch.randn(b, k, w, h, dtype=dtype).transpose(2, 3)
    raise ValueError(layout)


def _case(b=2, cin=3, C=5, H=7, W=9, K=3, layouts=("contiguous",) * 4, zx=False, bias=True,
          peephole=False, dtype=torch.float32):
    """Leaves (x, h, c, weight, bias, peephole, zx) for one call; absent ones are None.
    ``layouts`` are those of x (or zx), h, c and (with peepholes) nothing else."""
    lx, lh, lc, _ = layouts
    weight = torch.randn(4 * C, cin + C, K, K, dtype=dtype) / ((cin + C) * K * K) ** 0.5
    leaves = dict(
        x=None if zx else _tensor((b, cin, H, W), dtype, lx),
        h=_tensor((b, C, H, W), dtype, lh),
        c=_tensor((b, C, H, W), dtype, lc),
        weight=weight,
        bias=torch.randn(4 * C, dtype=dtype) * 0.5 if bias and not zx else None,
        peephole=torch.randn(3, C, dtype=dtype) * 0.5 if peephole else None,
        zx=_tensor((b, 4 * C, H, W), dtype, lx) if zx else None,
    )
    for t in leaves.values():
        if t is not None:
            t.requires_grad_()
    return leaves


def _call(fn, leaves, forget_bias=0.7):
    L = leaves
    return fn(L["x"], L["h"], L["c"], L["weight"], L["bias"], L["peephole"], forget_bias,
              zx=L["zx"])


def _outputs_and_grads(fn, leaves, seed=1):
    outs = _call(fn, leaves)
    wrt = [t for t in leaves.values() if t is not None]
    gen = torch.Generator().manual_seed(seed)  # the same output gradients for every run
    grads = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) for o in outs]
    return list(outs), list(torch.autograd.grad(outs, wrt, grads))


def _names(leaves):
    return [k for k, t in leaves.items() if t is not None]


CASES = {
    # C = 5 and 20: not multiples of 16 (masked channel tiles); K = 1, 3, 5; odd sizes.
    "c5_k3": dict(),
    "batch1_k1_peep": dict(b=1, K=1, H=5, W=5, peephole=True),
    "c20_k5_nobias_peep": dict(cin=4, C=20, K=5, bias=False, peephole=True),
    "channels_last": dict(C=20, H=5, W=5, layouts=("channels_last",) * 4, peephole=True),
    "strided": dict(layouts=("channel_slice", "every_other", "transposed", None)),
    "zx_peep": dict(zx=True, peephole=True),
    "zx_channels_last_k5": dict(b=1, cin=2, C=20, K=5,
                                layouts=("channels_last", "channels_last", "contiguous", None),
                                zx=True),
    "thin_input_wide_frame": dict(b=1, cin=1, H=3, W=13, K=3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case):
    leaves = _case(**CASES[case])
    out_f, grad_f = _outputs_and_grads(ops.conv_gates_triton, leaves)
    out_r, grad_r = _outputs_and_grads(ops.conv_gates_ref, leaves)
    for name, a, e in zip(("h", "c"), out_f, out_r):
        assert_close(a, e, RTOL[torch.float32], f"{case} {name}")
    for name, a, e in zip(_names(leaves), grad_f, grad_r):
        assert_close(a, e, RTOL[torch.float32], f"{case} grad {name}")


@pytest.mark.parametrize("case", ["c5_k3", "zx_peep"])
def test_float64_matches_reference_exactly(case):
    leaves = _case(**CASES[case], dtype=torch.float64)
    for a, e in zip(*(_outputs_and_grads(fn, leaves) for fn in
                      (ops.conv_gates_triton, ops.conv_gates_ref))):
        for x, y in zip(a, e):
            assert_close(x, y, RTOL[torch.float64])


def test_tiles_cover_the_output(monkeypatch):
    """Small tiles force several pixel blocks (crossing batch boundaries), two channel
    blocks and two reduction chunks of both x and h; the outputs start NaN-poisoned, so an
    element no program writes fails the comparison."""
    from fastcells.kernels import conv_gates, layout

    assert layout.POISON[0], "the conftest fixture should NaN-fill kernel outputs"
    monkeypatch.setattr(conv_gates, "tile_sizes", lambda *a: dict(
        BLOCK_P=16, BLOCK_C=16, BLOCK_KX=16, BLOCK_KH=16, num_warps=4))
    leaves = _case(b=2, cin=18, C=20, H=5, W=7, K=3, peephole=True)
    out_f, grad_f = _outputs_and_grads(ops.conv_gates_triton, leaves)
    out_r, grad_r = _outputs_and_grads(ops.conv_gates_ref, leaves)
    for a, e in zip(out_f + grad_f, out_r + grad_r):
        assert_close(a, e, RTOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ["c5_k3_peep", "zx_channels_last"])
def test_half_precision_error_within_twice_eager(dtype, case):
    """bf16/fp16 inputs, float32 accumulation: no worse than twice the eager reference run in
    the same dtype, both measured against the float64 reference, outputs and gradients."""
    kwargs = (dict(peephole=True) if case == "c5_k3_peep" else
              dict(zx=True, layouts=("channels_last", "channels_last", "channels_last", None)))
    leaves64 = _case(**kwargs, dtype=torch.float64)

    def run(fn, dtype):
        leaves = {k: t.detach().to(dtype).requires_grad_() if t is not None else None
                  for k, t in leaves64.items()}
        return _outputs_and_grads(fn, leaves)

    truth = run(ops.conv_gates_ref, torch.float64)
    eager = run(ops.conv_gates_ref, dtype)
    fused = run(ops.conv_gates_triton, dtype)
    names = ["h", "c"] + [f"grad {n}" for n in _names(leaves64)]
    for name, t, e, f in zip(names, truth[0] + truth[1], eager[0] + eager[1],
                             fused[0] + fused[1]):
        assert f.dtype == dtype and torch.isfinite(f).all(), name
        err_e, err_f = rel_error(e, t), rel_error(f, t)
        assert err_f <= 2 * err_e + 1e-6, (
            f"{name}: {dtype} error {err_f:.2e} > twice eager's {err_e:.2e}")


@pytest.mark.parametrize("zx", [False, True], ids=["x", "zx"])
def test_gradcheck_float64(zx):
    leaves = _case(b=2, cin=2, C=5, H=3, W=4, K=3, zx=zx, peephole=True, dtype=torch.float64)
    names = _names(leaves)

    def fn(*ts):
        return _call(ops.conv_gates_triton, dict(leaves, **dict(zip(names, ts))))

    # Each interpreter launch takes tens of ms: fast mode (random projections of the
    # Jacobian) checks every input in seconds where the full Jacobian would take minutes.
    assert torch.autograd.gradcheck(fn, [leaves[n] for n in names], fast_mode=True)


def test_unused_outputs_get_no_gradient():
    """Only h reaches the loss: c's gradient is treated as zero, and inputs that need no
    gradient get none."""
    leaves = _case(peephole=True, dtype=torch.float64)
    leaves["x"].requires_grad_(False)
    wrt = [t for k, t in leaves.items() if t is not None and k != "x"]
    g_f = torch.autograd.grad(_call(ops.conv_gates_triton, leaves)[0].sum(), wrt)
    g_r = torch.autograd.grad(_call(ops.conv_gates_ref, leaves)[0].sum(), wrt)
    for a, e in zip(g_f, g_r):
        assert_close(a, e, RTOL[torch.float64])


def _op_samples():
    # opcheck runs the op (and its backward) a dozen times, also under fake and dynamic
    # shapes: small frames keep that to seconds in the interpreter.
    small = dict(b=2, H=3, W=4)
    d = _case(peephole=True, **small)
    z = _case(zx=True, cin=2, K=5, layouts=("channels_last",) * 4, **small)
    nograd = {k: t.detach() if t is not None else None
              for k, t in _case(bias=False, **small).items()}
    return [
        (d["x"], d["h"], d["c"], d["weight"], d["bias"], None, d["peephole"], 0.5),
        (None, z["h"], z["c"], z["weight"][:, 2:].detach().requires_grad_(), None, z["zx"],
         None, 0.0),
        (nograd["x"], nograd["h"], nograd["c"], nograd["weight"], None, None, None, 1.0),
    ]


@pytest.mark.parametrize("i", range(3))
def test_opcheck(i):
    torch.library.opcheck(torch.ops.fastcells.conv_gates_triton.default, _op_samples()[i])


@pytest.mark.parametrize("config", ["convlstm", "convlstm_peephole"])
def test_cell_option_matches_reference(config):
    """ConvLSTMCell(fused_conv=True) over 3 steps from a random state: every state, and the
    gradients of the inputs, the initial state and the parameters."""
    ref, fused = make_cells(config, [("reference", {}), ("triton", {"fused_conv": True})])
    xs = [torch.randn(2, 3, 9, 11, requires_grad=True) for _ in range(3)]
    state0 = tuple(torch.randn(2, 5, 9, 11, requires_grad=True) for _ in range(2))
    produced = {}
    for name, cell in (("ref", ref), ("fused", fused)):
        state, outs = state0, []
        for x in xs:
            state = cell(x, state)
            outs.extend(state)
        produced[name] = outs
    for a, e in zip(produced["fused"], produced["ref"]):
        assert_close(a, e, RTOL[torch.float32])
    leaves = [*xs, *state0]
    g_r = torch.autograd.grad(sum(o.sum() for o in produced["ref"]), [*leaves, *ref.parameters()])
    g_f = torch.autograd.grad(sum(o.sum() for o in produced["fused"]),
                              [*leaves, *fused.parameters()])
    for a, e in zip(g_f, g_r):
        assert_close(a, e, RTOL[torch.float32])


@pytest.mark.parametrize("memory_efficient", [False, True], ids=["default", "memeff"])
def test_layer_option_with_batched_input_projection(memory_efficient):
    """fc.ConvLSTM(fused_conv=True): the first layer adds the batched input projection zx in
    the kernel's epilogue (memory-efficient mode recomputes from x instead)."""
    kwargs = dict(num_layers=2, peephole=True, forget_bias=1.0)
    ref = fc.ConvLSTM(3, 5, backend="reference", **kwargs)
    fused = fc.ConvLSTM(3, 5, backend="triton", fused_conv=True, batch_input_projection=True,
                        memory_efficient=memory_efficient, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) / (p[0].numel() ** 0.5 if p.dim() > 1 else 2))
    fused.load_state_dict(ref.state_dict())
    assert fused._batches_projection(torch.zeros(1, 3, 5, 7)) is not memory_efficient
    x = torch.randn(2, 3, 3, 5, 7, requires_grad=True)
    out_r, out_f = ref(x)[0], fused(x)[0]
    assert_close(out_f, out_r, RTOL[torch.float32])
    g_r = torch.autograd.grad(out_r.sum(), [x, *ref.parameters()])
    g_f = torch.autograd.grad(out_f.sum(), [x, *fused.parameters()])
    for a, e in zip(g_f, g_r):
        assert_close(a, e, RTOL[torch.float32])


def test_errors():
    with pytest.raises(ValueError, match="backend='triton'"):
        fc.ConvLSTMCell(3, 5, backend="reference", fused_conv=True)
    with pytest.raises(ValueError, match="backend='triton'"):
        fc.ConvLSTM(3, 5, fused_conv=True)  # "auto" may resolve elsewhere: refused too
    L = {k: t.detach() if t is not None else None for k, t in _case().items()}
    zx = torch.randn(2, 20, 7, 9)
    with pytest.raises(ValueError, match="exactly one of x"):
        ops.conv_gates_triton(L["x"], L["h"], L["c"], L["weight"], zx=zx)
    with pytest.raises(ValueError, match="exactly one of x"):
        ops.conv_gates_triton(None, L["h"], L["c"], L["weight"])
    with pytest.raises(ValueError, match="bias=None with zx"):
        ops.conv_gates_triton(None, L["h"], L["c"], L["weight"], L["bias"], zx=zx)
    with pytest.raises(ValueError, match="K odd"):
        ops.conv_gates_triton(L["x"], L["h"], L["c"], torch.randn(20, 8, 2, 2))
    with pytest.raises(ValueError, match="x must be"):
        ops.conv_gates_triton(L["x"][:, :2], L["h"], L["c"], L["weight"])
    with pytest.raises(TypeError, match="one dtype"):
        ops.conv_gates_triton(L["x"], L["h"], L["c"], L["weight"].double())


def _has_nvidia_backend() -> bool:
    try:
        import triton
    except ImportError:
        return False
    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    return all(os.path.exists(os.path.join(bin_dir, t)) for t in ("ptxas", "cuobjdump"))


@pytest.mark.skipif(not _has_nvidia_backend(), reason="triton without its NVIDIA backend")
def test_compiles_for_sm90(tmp_path):
    """The interpreter does not lower the kernel; this compiles it for an H100 (sm_90) as a
    launch would (same specialization), without a GPU: tl.dot shapes, the accumulator's
    reshape/split and every dtype's layouts must be accepted by the GPU backend. (The
    conv_gates cases of tests/triton_sm90.py, which tests/test_triton_sm90.py runs with
    every other kernel's; Triton's cache shares the compiled kernels between the two.)"""
    script = os.path.join(os.path.dirname(__file__), "triton_sm90.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(__file__)), env.get("PYTHONPATH", "")])
    out = tmp_path / "conv_gates.json"
    done = subprocess.run([sys.executable, script, "--only", "conv_gates", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())["results"]
    # fp32 and bf16 in both layouts, fp16 and fp64 contiguous; with x and bias, or zx
    assert len(results) == 12 and all(r["ok"] for r in results), done.stdout
    assert {r["dtype"] for r in results} == {"fp32", "bf16", "fp16", "fp64"}, done.stdout


def test_fullgraph_aot_eager():
    """Dynamo captures a fused_conv step, forward and backward, without a graph break (the
    registered op and its autograd formula, not the eager autograd.Function)."""
    torch._dynamo.reset()
    ref, fused = make_cells("convlstm_peephole",
                            [("reference", {}), ("triton", {"fused_conv": True})])
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    out_c = torch.compile(fused, fullgraph=True, backend="aot_eager")(x)[0]
    out_r = ref(x)[0]
    assert_close(out_c, out_r, RTOL[torch.float32])
    g_c = torch.autograd.grad(out_c.sum(), [x, *fused.parameters()])
    g_r = torch.autograd.grad(out_r.sum(), [x, *ref.parameters()])
    for a, e in zip(g_c, g_r):
        assert_close(a, e, RTOL[torch.float32])
