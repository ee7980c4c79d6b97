"""Each fused gate op (C++ and Triton backends) against its eager reference, forward and
backward. Triton runs in the interpreter on CPU tensors when there is no GPU."""
import pytest
import torch

from fastcells import ops

from .conftest import requires_cpp, requires_triton
from .helpers import RTOL, assert_close, flat_outputs, rel_error

C = 5
BACKENDS = [pytest.param("cpp", marks=requires_cpp),
            pytest.param("triton", marks=requires_triton)]


def _planes(b, k, h, w, dtype, layout):
    """A (b, k, h, w) tensor in one of the layouts users hand us."""
    if layout == "contiguous":
        return torch.randn(b, k, h, w, dtype=dtype)
    if layout == "channels_last":
        return torch.randn(b, k, h, w, dtype=dtype).to(memory_format=torch.channels_last)
    if layout == "channel_slice":  # batch stride larger than k*h*w: read in place
        return torch.randn(b, k + 3, h, w, dtype=dtype)[:, 2:2 + k]
    if layout == "strided":  # every other channel: needs a copy
        return torch.randn(b, 2 * k, h, w, dtype=dtype)[:, ::2]
    if layout == "transposed":
        return torch.randn(b, k, w, h, dtype=dtype).transpose(2, 3)
    raise ValueError(layout)


OPS = {
    # name: (op, channel multiples of the tensor inputs, extra args); the functions are
    # fastcells.ops.<op>_ref and fastcells.ops.<op>_<backend>
    "convlstm": ("convlstm_gates", (4, 1), (None, 0.0)),
    "convlstm_fb": ("convlstm_gates", (4, 1), (None, 1.5)),
    "convlstm_peephole": ("convlstm_gates", (4, 1), ("peep", 0.7)),
    "stlstm": ("stlstm_gates", (7, 4, 3, 1, 1), (False,)),
    "stlstm_deltas": ("stlstm_gates", (7, 4, 3, 1, 1), (True,)),
    "mklstm": ("mklstm_gates", (4, 4, 1, 1), ()),
    "output": ("output_gate", (1, 1, 1), ()),
    "causal_c": ("causal_c_gates", (7, 4, 3, 3, 1), (1.0,)),
    "causal_m": ("causal_m_gates", (4, 4, 1, 1), (0.5,)),  # a forget bias other than 1
    "causal_output": ("causal_output_gate", (1, 1, 1), ()),
    "ghu": ("ghu_gates", (2, 2, 1), ()),
}


def _fns(name, backend):
    """(reference, fused) functions of an op."""
    op = OPS[name][0]
    return getattr(ops, f"{op}_ref"), getattr(ops, f"{op}_{backend}")


def _inputs(name, b, h, w, dtype, layout, requires_grad=True):
    _, mults, extra = OPS[name]
    xs = [_planes(b, m * C, h, w, dtype, layout).requires_grad_(requires_grad) for m in mults]
    extra = tuple(torch.randn(3, C, dtype=dtype, requires_grad=requires_grad) if e == "peep" else e
                  for e in extra)
    return xs, extra



@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channel_slice", "strided",
                                    "transposed"])
@pytest.mark.parametrize("shape", [(2, 9, 11), (1, 7, 5), (3, 1, 13)])
def test_matches_reference(name, layout, shape, backend):
    ref, cpp = _fns(name, backend)
    b, h, w = shape
    dtype = torch.float32
    xs, extra = _inputs(name, b, h, w, dtype, layout)
    out_ref, out_cpp = flat_outputs(ref(*xs, *extra)), flat_outputs(cpp(*xs, *extra))
    assert len(out_ref) == len(out_cpp)
    for i, (a, e) in enumerate(zip(out_cpp, out_ref)):
        assert_close(a, e, RTOL[dtype], f"{name} output {i}")
    grads = [torch.randn_like(o) for o in out_ref]
    leaves = [*xs, *[e for e in extra if isinstance(e, torch.Tensor)]]
    g_ref = torch.autograd.grad(out_ref, leaves, grads)
    g_cpp = torch.autograd.grad(out_cpp, leaves, grads)
    for i, (a, e) in enumerate(zip(g_cpp, g_ref)):
        assert_close(a, e, RTOL[dtype], f"{name} grad {i}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(OPS))
def test_unused_outputs_get_no_gradient(name, backend):
    """Only the first output reaches the loss: the others' gradients are treated as zero."""
    ref, cpp = _fns(name, backend)
    xs, extra = _inputs(name, 2, 5, 6, torch.float64, "contiguous")
    g_ref = torch.autograd.grad(flat_outputs(ref(*xs, *extra))[0].sum(), xs, allow_unused=True)
    g_cpp = torch.autograd.grad(flat_outputs(cpp(*xs, *extra))[0].sum(), xs, allow_unused=True)
    for a, e in zip(g_cpp, g_ref):
        if e is None:
            assert a is None or a.abs().max() == 0
        else:
            assert_close(a, e, RTOL[torch.float64])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(OPS))
def test_gradcheck_float64(name, backend):
    _, cpp = _fns(name, backend)
    xs, extra = _inputs(name, 2, 3, 4, torch.float64, "contiguous")
    # The interpreter runs a Triton launch in ~30 ms: the full Jacobian (2 launches per input
    # element) would take minutes, the fast mode (random projections of it) seconds.
    fast = backend == "triton"
    tensors = [*xs, *[e for e in extra if isinstance(e, torch.Tensor)]]
    n = len(xs)

    def fn(*ts):
        it = iter(ts[n:])
        args = [next(it) if isinstance(e, torch.Tensor) else e for e in extra]
        return tuple(flat_outputs(cpp(*ts[:n], *args)))

    assert torch.autograd.gradcheck(fn, tensors, fast_mode=fast)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(OPS))
def test_float64_matches_reference_exactly(name, backend):
    ref, cpp = _fns(name, backend)
    xs, extra = _inputs(name, 2, 5, 3, torch.float64, "contiguous")
    for a, e in zip(flat_outputs(cpp(*xs, *extra)), flat_outputs(ref(*xs, *extra))):
        assert_close(a, e, RTOL[torch.float64])


@requires_triton
@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_precision_error_within_twice_eager(name, layout, dtype):
    """bf16/fp16: the Triton kernels (float32 math) are no worse than twice the eager
    reference run in the same dtype, both measured against the float64 reference."""
    ref, fused = _fns(name, "triton")
    xs64, extra64 = _inputs(name, 2, 7, 9, torch.float64, layout)
    leaves64 = [*xs64, *[e for e in extra64 if isinstance(e, torch.Tensor)]]

    def run(fn, cast):
        leaves = [t.detach().to(cast).requires_grad_() for t in leaves64]
        xs, it = leaves[:len(xs64)], iter(leaves[len(xs64):])
        extra = [next(it) if isinstance(e, torch.Tensor) else e for e in extra64]
        outs = flat_outputs(fn(*xs, *extra))
        torch.manual_seed(1)  # the same output gradients for every run
        grads = [torch.randn(o.shape, dtype=torch.float64).to(cast) for o in outs]
        return outs, torch.autograd.grad(outs, leaves, grads)

    truth, eager, fused_ = run(ref, torch.float64), run(ref, dtype), run(fused, dtype)
    for kind in range(2):
        for i, (t, e, f) in enumerate(zip(truth[kind], eager[kind], fused_[kind])):
            assert torch.isfinite(f).all(), f"{name} {('output', 'grad')[kind]} {i}"
            err_e, err_f = rel_error(e, t), rel_error(f, t)
            assert err_f <= 2 * err_e + 1e-6, (
                f"{name} {('output', 'grad')[kind]} {i}: {dtype} error {err_f:.2e} > twice "
                f"eager's {err_e:.2e}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("forget_bias", [0.0, -0.75])
def test_stlstm_forget_bias_matches_reference(backend, dtype, forget_bias):
    """ST-LSTM's forget bias is an argument (1.0 by default, the other tests): 0 for MS-RNN's
    PredRNN cells. Both memories' forget gates take it; outputs and every gradient."""
    ref, fused = _fns("stlstm", backend)
    xs, _ = _inputs("stlstm", 2, 5, 7, dtype, "channels_last")
    outs = [flat_outputs(fn(*xs, True, forget_bias)) for fn in (ref, fused)]
    grads = [torch.randn_like(o) for o in outs[0]]
    g_ref, g_fused = (torch.autograd.grad(o, xs, grads) for o in outs)
    for i, (a, e) in enumerate(zip([*outs[1], *g_fused], [*outs[0], *g_ref])):
        assert_close(a, e, RTOL[dtype], f"tensor {i}")
    default = flat_outputs(ref(*xs, True))
    assert rel_error(default[0], outs[0][0]) > 1e-3  # the bias reaches the result


@requires_cpp
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_unsupported_dtype_is_an_error(dtype):
    xs, extra = _inputs("convlstm", 1, 3, 3, torch.float32, "contiguous", requires_grad=False)
    with pytest.raises(RuntimeError):
        ops.convlstm_gates_cpp(*[x.to(dtype) for x in xs], *extra)


def _op_samples(suffix=""):
    z = torch.randn(2, 4 * C, 3, 5)
    c = torch.randn(2, C, 3, 5)
    peep = torch.randn(3, C)
    g = torch.randn(2, C, 3, 5)
    acts4 = torch.rand(2, 4 * C, 3, 5)
    zx, zh, zm = (torch.randn(2, k * C, 3, 5) for k in (7, 4, 3))
    acts6, acts2 = torch.rand(2, 6 * C, 3, 5), torch.rand(2, 2 * C, 3, 5)

    def f(name):
        return getattr(torch.ops.fastcells, name.replace("@", suffix)).default

    cpp = suffix == ""  # the C++ MK-LSTM backward is told z2's rows (3C: no o block)

    return [
        (f("convlstm_gates@"), (z.requires_grad_(), c.clone().requires_grad_(), None, 0.5)),
        (f("convlstm_gates@"), (z, c.clone().requires_grad_(), peep.requires_grad_(), 0.0)),
        (f("convlstm_gates@_backward"), (g, g, acts4, c, c, peep.detach())),
        (f("stlstm_gates@"), (zx.requires_grad_(), zh, zm, c, c, True, 0.0)),
        (f("stlstm_gates@_backward"), (acts2, g, acts2, acts6, c, c)),
        (f("stlstm_gates@_backward"), (acts2, g, None, acts6, c, c)),
        (f("mklstm_gates@"), (z, z.detach().clone().requires_grad_(), c, c)),
        (f("mklstm_gates@_backward"), (acts2, g, acts6, c, c, *([4 * C] if cpp else []))),
        (f("output_gate@"), (g.clone().requires_grad_(), g, g)),
        (f("output_gate@_backward"), (g, acts2)),
        (f("causal_c_gates@"), (zx.detach().clone().requires_grad_(), zh, zh[:, :3 * C], zm,
                                c.clone().requires_grad_(), 1.0)),
        (f("causal_c_gates@_backward"), (g, g, z.detach(), acts6[:, :3 * C], c)),
        (f("causal_m_gates@"), (z.detach().clone().requires_grad_(), z, c, g, 0.0)),
        (f("causal_m_gates@_backward"), (g, g, acts4)),
        (f("causal_output_gate@"), (g, g.clone().requires_grad_(), c)),
        (f("causal_output_gate@_backward"), (g, acts2)),
        (f("ghu_gates@"), (zh[:, :2 * C].clone().requires_grad_(), zh[:, 2 * C:], g)),
        (f("ghu_gates@_backward"), (g, acts2, c)),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("i", range(18))
def test_opcheck(i, backend):
    op, args = _op_samples("" if backend == "cpp" else "_triton")[i]
    torch.library.opcheck(op, args)


@requires_cpp
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_mklstm_z2_without_o_block(layout):
    """The C++ MK-LSTM kernel also takes a z2 of 3C rows (i, f, g: ST-LSTM's summed path):
    then o_partial is o1 alone and z2's gradient has 3C rows."""
    ref, cpp = _fns("mklstm", "cpp")
    for dtype in (torch.float32, torch.float64):
        z1, z2, c1, c2 = (_planes(2, m * C, 7, 9, dtype, layout).requires_grad_()
                          for m in (4, 3, 1, 1))
        out_ref, out_cpp = flat_outputs(ref(z1, z2, c1, c2)), flat_outputs(cpp(z1, z2, c1, c2))
        for i, (a, e) in enumerate(zip(out_cpp, out_ref)):
            assert_close(a, e, RTOL[dtype], f"output {i}")
        grads = [torch.randn_like(o) for o in out_ref]
        g_cpp = torch.autograd.grad(out_cpp, [z1, z2, c1, c2], grads)
        g_ref = torch.autograd.grad(out_ref, [z1, z2, c1, c2], grads)
        assert g_cpp[1].shape == z2.shape
        for i, (a, e) in enumerate(zip(g_cpp, g_ref)):
            assert_close(a, e, RTOL[dtype], f"grad {i}")
    z1, z2, c1, c2 = (torch.randn(2, m * C, 3, 4, dtype=torch.float64, requires_grad=True)
                      for m in (4, 3, 1, 1))
    assert torch.autograd.gradcheck(lambda *t: tuple(flat_outputs(cpp(*t))), (z1, z2, c1, c2))
    acts6, acts2 = torch.rand(2, 6 * C, 3, 5), torch.rand(2, 2 * C, 3, 5)
    c, g = torch.randn(2, C, 3, 5), torch.randn(2, C, 3, 5)
    torch.library.opcheck(torch.ops.fastcells.mklstm_gates.default,
                          (torch.randn(2, 4 * C, 3, 5), torch.randn(2, 3 * C, 3, 5,
                                                                   requires_grad=True), c, c))
    torch.library.opcheck(torch.ops.fastcells.mklstm_gates_backward.default,
                          (acts2, g, acts6, c, c, 3 * C))
    with pytest.raises(RuntimeError, match="z2"):
        cpp(torch.randn(2, 4 * C, 3, 5), torch.randn(2, 2 * C, 3, 5), c, c)
