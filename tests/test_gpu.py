"""The GPU backends on a GPU: every op and cell of ``triton`` and ``cuda`` against the
reference on CUDA tensors, torch.compile (inductor, tracing into the Triton kernels) and
CUDA-graph capture. Needs a CUDA GPU and ``FASTCELLS_GPU_TESTS=1`` (so the Triton kernels
are compiled, not interpreted); ``benchmarks/gpu_suite.py`` runs this file. On machines
without a GPU the same kernels are tested in the interpreter (test_gate_ops.py,
test_cells.py, test_compile.py).
"""
import pytest
import torch

import fastcells as fc
from fastcells import _ext, backends
from fastcells.cuda_graphs import graph_sequence

from .conftest import GPU_TESTS
from .helpers import CELL_CONFIGS, assert_close, flat_outputs, make_cells, rel_error
from .test_gate_ops import OPS, _fns, _inputs
from .test_triton_ctt import CASES as CTT_CASES
from .test_triton_ctt import _chain as ctt_chain
from .test_triton_ctt import _run as ctt_run

if not (torch.cuda.is_available() and GPU_TESTS):
    pytest.skip("needs a CUDA GPU and FASTCELLS_GPU_TESTS=1 (benchmarks/gpu_suite.py sets it)",
                allow_module_level=True)

# cuDNN's TF32 convolutions would make the reference itself ~1e-3 off in float32.
FP32_RTOL = 1e-5


@pytest.fixture(autouse=True)
def _exact_float32():
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


def _gpu_backends():
    out = []
    if _ext.triton_available():
        out.append("triton")
    if _ext.cuda_available():
        out.append("cuda")
    return out


# Both, always: a backend missing on the GPU machine fails its tests (pytest.fail below)
# instead of generating none.
GPU_BACKENDS = ["triton", "cuda"]


def _same_strides(t: torch.Tensor, device=None, dtype=None) -> torch.Tensor:
    """A copy of ``t`` on ``device`` in ``dtype`` with ``t``'s own strides: ``.cuda()`` and
    ``.to(dtype)`` make non-dense tensors (channel slices, strided views) contiguous, so the
    layouts under test would silently become contiguous ones."""
    out = torch.empty_strided(t.shape, t.stride(), dtype=dtype or t.dtype,
                              device=device or t.device)
    with torch.no_grad():
        out.copy_(t)
    return out


def _cuda(ts):
    return [_same_strides(t.detach(), "cuda").requires_grad_(t.requires_grad)
            if isinstance(t, torch.Tensor) else t for t in ts]


def _run_op(fn, xs, extra, out_grads=None):
    outs = flat_outputs(fn(*xs, *extra))
    leaves = [*xs, *[e for e in extra if isinstance(e, torch.Tensor)]]
    if out_grads is None:
        torch.manual_seed(1)
        out_grads = [torch.randn(o.shape, dtype=torch.float64, device=o.device) for o in outs]
    grads = torch.autograd.grad(outs, leaves, [g.to(o.dtype) for g, o in zip(out_grads, outs)])
    return outs, grads, out_grads


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channel_slice"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 9, 11), (1, 64, 64), (16, 64, 64)])
def test_op_on_gpu(backend, name, layout, dtype, shape):
    if backend not in _gpu_backends():
        pytest.fail(f"backend {backend!r} is not available on this GPU machine")
    ref, fused = _fns(name, backend)
    b, h, w = shape
    xs64, extra64 = _inputs(name, b, h, w, torch.float64, layout)
    xs64, extra64 = _cuda(xs64), _cuda(extra64)
    truth = _run_op(ref, xs64, extra64)

    def cast(ts):
        return [_same_strides(t.detach(), dtype=dtype).requires_grad_()
                if isinstance(t, torch.Tensor) else t for t in ts]

    eager = _run_op(ref, cast(xs64), cast(extra64), truth[2])
    got = _run_op(fused, cast(xs64), cast(extra64), truth[2])
    for kind in range(2):
        for i, (t, e, f) in enumerate(zip(truth[kind], eager[kind], got[kind])):
            assert torch.isfinite(f).all(), f"{name} {kind} {i}: non-finite"
            err = rel_error(f, t)
            bound = FP32_RTOL if dtype == torch.float32 else 2 * rel_error(e, t) + 1e-6
            assert err <= bound, f"{name} {('out', 'grad')[kind]} {i}: {err:.2e} > {bound:.2e}"


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("config", list(CELL_CONFIGS))
@pytest.mark.parametrize("memory_efficient", [False, True])
def test_cell_on_gpu(backend, config, memory_efficient):
    ref, cell = make_cells(config, [("reference", {}),
                                    (backend, {"memory_efficient": memory_efficient})],
                           spatial=(17, 23))
    ref, cell = ref.cuda(), cell.cuda()
    assert cell.backend == backend
    xs = [torch.randn(3, 3, 17, 23, device="cuda", requires_grad=True) for _ in range(3)]
    sr = sc = None
    outs_r, outs_c = [], []
    for x in xs:
        sr, sc = ref(x, sr), cell(x, sc)
        outs_r.append(sr[0])
        outs_c.append(sc[0])
    for a, e in zip(outs_c, outs_r):
        assert_close(a, e, FP32_RTOL)
    loss_r = sum((o * o).sum() for o in outs_r)
    loss_c = sum((o * o).sum() for o in outs_c)
    g_r = torch.autograd.grad(loss_r, [*xs, *ref.parameters()])
    g_c = torch.autograd.grad(loss_c, [*xs, *cell.parameters()])
    for i, (a, e) in enumerate(zip(g_c, g_r)):
        assert_close(a, e, 1e-4, f"grad {i}")


@pytest.mark.parametrize("config", ["convlstm", "stlstm", "mklstm", "convttlstm"])
def test_auto_resolves_per_cell_on_gpu(config):
    (cell,) = make_cells(config, [("auto", {})])
    expected = next((b for b in backends.AUTO_PREFERENCE[cell.kind]
                     if backends.supports(b, torch.device("cuda"), torch.float32)), "reference")
    assert cell.cuda().backend == expected


@pytest.mark.parametrize("config", ["convlstm_peephole", "stlstm", "mklstm", "convttlstm"])
def test_inductor_traces_the_triton_kernels(config):
    torch._dynamo.reset()
    ref, cell = make_cells(config, [("reference", {}), ("triton", {})])
    ref, cell = ref.cuda(), cell.cuda()
    x = torch.randn(2, 3, 9, 11, device="cuda", requires_grad=True)
    compiled = torch.compile(cell, fullgraph=True)
    out_c, out_r = compiled(x)[0], ref(x)[0]
    assert_close(out_c, out_r, FP32_RTOL)
    g_c = torch.autograd.grad(out_c.sum(), [x, *cell.parameters()])
    g_r = torch.autograd.grad(out_r.sum(), [x, *ref.parameters()])
    for a, e in zip(g_c, g_r):
        assert_close(a, e, 1e-4)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("layer_cls", [fc.ConvLSTM, fc.SpatioTemporalLSTM, fc.MKLSTM,
                                       fc.ConvTTLSTM])
def test_cuda_graph_sequence_matches_eager(backend, layer_cls):
    layer = layer_cls(1, 8, num_layers=2, backend=backend).cuda()
    eager = layer_cls(1, 8, num_layers=2, backend="reference").cuda()
    eager.load_state_dict(layer.state_dict())
    sample = torch.randn(2, 5, 1, 16, 16, device="cuda")
    step = graph_sequence(layer, sample)
    for _ in range(2):  # replays, with fresh inputs each time
        x = torch.randn_like(sample)
        layer.zero_grad(set_to_none=False)
        eager.zero_grad()
        out = step(x)
        ref = eager(x)[0]
        assert_close(out, ref, FP32_RTOL)
        out.square().sum().backward()
        ref.square().sum().backward()
        for (name, p), q in zip(layer.named_parameters(), eager.parameters()):
            assert_close(p.grad, q.grad, 1e-4, name)


# Every dtype each GPU backend takes, per cell: float64 against the float64 reference
# (both exact up to summation order), 16-bit against the truth (float64 reference) no worse
# than twice the eager reference's own error in that dtype (CELLS.md), and never required
# below one rounding to the dtype (its unit roundoff): an output stored in bf16/fp16 is
# rounded at least once whatever computes it, while eager can land under that on small
# reductions by the luck of its summation order (seen: a 3-channel CTT weight gradient).
GPU_DTYPES = [torch.float64, torch.bfloat16, torch.float16]


def half_bound(eager_error: float, dtype: torch.dtype) -> float:
    return max(2 * eager_error, torch.finfo(dtype).eps / 2) + 1e-6
CELL_DTYPE_VARIANTS = [(b, {}) for b in GPU_BACKENDS] + [("triton", {"fused_conv": True})]


def _unroll(cell, xs):
    """Three steps of ``cell`` from zero state; outputs and the gradients of sum(h^2) with
    respect to the inputs and the parameters."""
    state, outs = None, []
    for x in xs:
        state = cell(x, state)
        outs.append(state[0])
    loss = sum((o.double() ** 2).sum() for o in outs)
    return outs, torch.autograd.grad(loss, [*xs, *cell.parameters()])


@pytest.mark.parametrize("variant", CELL_DTYPE_VARIANTS,
                         ids=[b + ("_fused_conv" if e else "") for b, e in CELL_DTYPE_VARIANTS])
@pytest.mark.parametrize("config", ["convlstm", "convlstm_peephole", "stlstm_bias_ln", "mklstm",
                                    "convttlstm", "convttlstm_lags"])
@pytest.mark.parametrize("dtype", GPU_DTYPES)
def test_cell_dtypes_on_gpu(variant, config, dtype):
    backend, extra = variant
    if backend not in _gpu_backends():
        pytest.fail(f"backend {backend!r} is not available on this GPU machine")
    if extra.get("fused_conv") and not config.startswith("convlstm"):
        pytest.skip("fused_conv is a ConvLSTMCell option")
    truth, eager, fused = make_cells(config, [("reference", {}), ("reference", {}),
                                              (backend, extra)], spatial=(13, 19))
    truth = truth.cuda().double()
    eager, fused = eager.cuda().to(dtype), fused.cuda().to(dtype)
    assert fused.backend == backend
    xs64 = [torch.randn(2, 3, 13, 19, device="cuda", dtype=torch.float64) for _ in range(3)]

    def inputs(dt):
        return [x.to(dt).requires_grad_() for x in xs64]

    t_out, t_grad = _unroll(truth, inputs(torch.float64))
    e_out, e_grad = _unroll(eager, inputs(dtype))
    f_out, f_grad = _unroll(fused, inputs(dtype))
    pairs = [("h", f, e, t) for f, e, t in zip(f_out, e_out, t_out)]
    pairs += [(f"grad {i}", f, e, t) for i, (f, e, t) in enumerate(zip(f_grad, e_grad, t_grad))]
    for name, f, e, t in pairs:
        assert f.dtype == dtype and torch.isfinite(f).all(), f"{name}: non-finite or {f.dtype}"
        bound = 1e-10 if dtype == torch.float64 else half_bound(rel_error(e, t), dtype)
        err = rel_error(f, t)
        assert err <= bound, f"{config} {name}: {err:.2e} > {bound:.2e}"


def _chain_on(chain, dtype):
    """CTT chain inputs (tests/test_triton_ctt.py's) as CUDA leaves in ``dtype``, each in its
    own layout (slices and strided views stay so)."""
    return tuple(None if group is None else
                 [_same_strides(t.detach(), "cuda", dtype).requires_grad_() for t in group]
                 for group in chain)


@pytest.mark.parametrize("case", list(CTT_CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_ctt_chain_on_gpu(case, dtype):
    """The CTT recurrence's kernels, forward and backward, in every dtype (float64 needs
    tl.dot's accumulator dtype passed: a CompilationError on triton 3.6 before)."""
    from fastcells.ops.ctt import ctt_chain_ref, ctt_chain_triton

    b, c, r, hw, k, m, n, head, layout, bias = CTT_CASES[case]
    chain = ctt_chain(b, c, r, hw, k, m, n, torch.float64, layout, bias)
    grad = torch.randn(b, r, *hw, dtype=torch.float64, device="cuda")
    truth = ctt_run(ctt_chain_ref, _chain_on(chain, torch.float64), head, grad)
    eager = ctt_run(ctt_chain_ref, _chain_on(chain, dtype), head, grad.to(dtype))
    got = ctt_run(ctt_chain_triton, _chain_on(chain, dtype), head, grad.to(dtype))
    pairs = [("v", got[0], eager[0], truth[0])]
    pairs += [(f"grad {i}", *g) for i, g in enumerate(zip(got[1], eager[1], truth[1]))]
    for name, f, e, t in pairs:
        assert torch.isfinite(f).all(), f"{name}: non-finite"
        bound = {torch.float64: 1e-10, torch.float32: FP32_RTOL}.get(dtype) or half_bound(
            rel_error(e, t), dtype)
        err = rel_error(f, t)
        assert err <= bound, f"{case} {name}: {err:.2e} > {bound:.2e}"
