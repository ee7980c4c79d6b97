"""MIM (CELLS.md section 7): the fused gate ops and the cells MIMNCell and MIMBlock, every
backend against the reference (the matrices of test_gate_ops.py, test_cells.py and
test_compile.py for these cells, whose forward signatures differ: MIMBlock takes diff_h,
MIMNCell takes x=None), and the reference against a re-creation of OpenSTL's modules."""
import pytest
import torch

import fastcells as fc
from fastcells import _ext, ops

from .conftest import requires_cpp, requires_triton
from .helpers import RTOL, assert_close, flat_outputs, randomize, rel_error
from .public import openstl_mim as openstl
from .test_gate_ops import _planes

C = 5
BACKENDS = [pytest.param("cpp", marks=requires_cpp),
            pytest.param("triton", marks=requires_triton)]

# ============================================================================ gate ops
# name: (op, channel multiples of the plane inputs, 0 standing for None, per-pixel weights?)
OPS = {
    "mims": ("mims_gates", (4, 4, 1), True),
    "mims_no_x": ("mims_gates", (4, 0, 1), True),
    "mim_block": ("mim_block_gates", (4, 3, 4, 1, 1), False),
}


def _fns(name, backend):
    op = OPS[name][0]
    return getattr(ops, f"{op}_ref"), getattr(ops, f"{op}_{backend}")


def op_inputs(name, b, h, w, dtype, layout, planes=None):
    """The op's arguments (None where an input is absent); random per-pixel weights."""
    _, mults, pixel = OPS[name]
    planes = planes or (lambda k, i: _planes(b, k, h, w, dtype, layout))
    args = [None if m == 0 else planes(m * C, i) for i, m in enumerate(mults)]
    if pixel:
        like = next(a for a in args if a is not None)
        args += [torch.randn(2 * C, h, w, dtype=torch.float64).to(like),
                 torch.randn(C, h, w, dtype=torch.float64).to(like)]
    return args


def _leaves(args):
    return [a for a in args if a is not None]


def _run_op(fn, args, weights=None, cast=None):
    """fn on fresh leaves (cast to ``cast``); outputs, and input grads when weights given."""
    leaves = [None if a is None else (a.detach().to(cast) if cast else a.detach())
              .requires_grad_() for a in args]
    out = flat_outputs(fn(*leaves))
    if weights is None:
        return out, None
    return out, torch.autograd.grad(out, _leaves(leaves), [w.to(o) for w, o in zip(weights, out)])


LAYOUTS = ["contiguous", "channels_last", "channel_slice", "strided", "transposed"]
SHAPES = [(2, 9, 11), (1, 7, 5), (3, 1, 13)]


def _op_matrix():
    """C++: every layout at every shape. Triton (~30 ms per interpreted launch): every layout
    at the first shape, every shape contiguous (CI time, tests/test_mim.py's budget)."""
    out = [(b, n, lay, sh) for b in BACKENDS[:1] for n in OPS for lay in LAYOUTS
           for sh in SHAPES]
    out += [(BACKENDS[1], n, lay, SHAPES[0]) for n in OPS for lay in LAYOUTS]
    out += [(BACKENDS[1], n, "contiguous", sh) for n in OPS for sh in SHAPES[1:]]
    return [pytest.param(n, lay, sh, b.values[0], marks=b.marks,
                         id=f"{b.values[0]}-{n}-{lay}-{'x'.join(map(str, sh))}")
            for b, n, lay, sh in out]


@pytest.mark.parametrize("name,layout,shape,backend", _op_matrix())
def test_op_matches_reference(name, layout, shape, backend):
    ref, fused = _fns(name, backend)
    args = op_inputs(name, *shape, torch.float32, layout)
    out_ref, _ = _run_op(ref, args)
    weights = [torch.randn_like(o) for o in out_ref]
    out_ref, g_ref = _run_op(ref, args, weights)
    out, g = _run_op(fused, args, weights)
    assert len(out) == len(out_ref)
    for i, (a, e) in enumerate(zip(out, out_ref)):
        assert_close(a, e, RTOL[torch.float32], f"{name} output {i}")
    for i, (a, e) in enumerate(zip(g, g_ref)):
        assert_close(a, e, RTOL[torch.float32], f"{name} grad {i}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(OPS))
def test_op_unused_outputs_get_no_gradient(name, backend):
    ref, fused = _fns(name, backend)
    args = op_inputs(name, 2, 5, 6, torch.float64, "contiguous")
    grads = []
    for fn in (ref, fused):
        leaves = [a.detach().requires_grad_() if a is not None else None for a in args]
        grads.append(torch.autograd.grad(flat_outputs(fn(*leaves))[0].sum(), _leaves(leaves),
                                         allow_unused=True))
    for a, e in zip(*reversed(grads)):
        if e is None:
            assert a is None or a.abs().max() == 0
        else:
            assert_close(a, e, RTOL[torch.float64])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(OPS))
def test_op_gradcheck_float64(name, backend):
    _, fused = _fns(name, backend)
    args = op_inputs(name, 2, 3, 4, torch.float64, "contiguous")
    present = [i for i, a in enumerate(args) if a is not None]

    def fn(*ts):
        full = list(args)
        for i, t in zip(present, ts):
            full[i] = t
        return tuple(flat_outputs(fused(*full)))

    tensors = [args[i].requires_grad_() for i in present]
    assert torch.autograd.gradcheck(fn, tensors, fast_mode=backend == "triton")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(OPS))
def test_op_float64_matches_reference_exactly(name, backend):
    ref, fused = _fns(name, backend)
    args = op_inputs(name, 2, 5, 3, torch.float64, "contiguous")
    out_ref, _ = _run_op(ref, args)
    weights = [torch.randn_like(o) for o in out_ref]
    for got, want in zip(_run_op(fused, args, weights), _run_op(ref, args, weights)):
        for a, e in zip(got, want):
            assert_close(a, e, RTOL[torch.float64])


@requires_triton
@pytest.mark.parametrize("name,layout", [(n, "contiguous") for n in OPS]
                         + [("mim_block", "channels_last"), ("mims", "channels_last")])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_precision_error_within_twice_eager(name, layout, dtype):
    ref, fused = _fns(name, "triton")
    args = op_inputs(name, 2, 7, 9, torch.float64, layout)
    out64, _ = _run_op(ref, args)
    torch.manual_seed(1)
    weights = [torch.randn(o.shape, dtype=torch.float64) for o in out64]
    truth = _run_op(ref, args, weights)
    eager = _run_op(ref, args, weights, cast=dtype)
    mine = _run_op(fused, args, weights, cast=dtype)
    for kind in range(2):
        for i, (t, e, f) in enumerate(zip(truth[kind], eager[kind], mine[kind])):
            assert torch.isfinite(f).all(), f"{name} {('output', 'grad')[kind]} {i}"
            err_e, err_f = rel_error(e, t), rel_error(f, t)
            assert err_f <= 2 * err_e + 1e-6, (
                f"{name} {('output', 'grad')[kind]} {i}: {dtype} error {err_f:.2e} > twice "
                f"eager's {err_e:.2e}")


@requires_cpp
def test_op_unsupported_dtype_is_an_error():
    args = op_inputs("mims", 1, 3, 3, torch.float32, "contiguous")
    with pytest.raises(RuntimeError):
        ops.mims_gates_cpp(*[a.to(torch.bfloat16) for a in args])


def op_samples(suffix=""):
    """(op, args) pairs for opcheck: every forward and backward op of one backend."""
    zh, zx, zs = (torch.randn(2, 4 * C, 3, 5) for _ in range(3))
    zt = torch.randn(2, 3 * C, 3, 5)
    c, g = torch.randn(2, C, 3, 5), torch.randn(2, C, 3, 5)
    ct, oc = torch.randn(2 * C, 3, 5), torch.randn(C, 3, 5)
    acts4, acts5 = torch.rand(2, 4 * C, 3, 5), torch.rand(2, 5 * C, 3, 5)
    gcm = torch.randn(2, 2 * C, 3, 5)

    def f(name):
        return getattr(torch.ops.fastcells, name.replace("@", suffix)).default

    return [
        (f("mims_gates@"), (zh.requires_grad_(), zx, c.clone().requires_grad_(),
                            ct.requires_grad_(), oc.requires_grad_())),
        (f("mims_gates@"), (zh, None, c, ct.detach(), oc.detach().requires_grad_())),
        (f("mims_gates@_backward"), (g, g, acts4, c, c, ct.detach(), oc.detach())),
        (f("mim_block_gates@"), (zx.detach().requires_grad_(), zt.requires_grad_(), zs, c,
                                 g.clone().requires_grad_())),
        (f("mim_block_gates@_backward"), (gcm, g, acts5, c)),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("i", range(5))
def test_opcheck(i, backend):
    op, args = op_samples("" if backend == "cpp" else "_triton")[i]
    torch.library.opcheck(op, args)


def test_gates_table_has_the_mim_ops():
    for backend, table in ops.GATES.items():
        suffix = "ref" if backend == "reference" else backend
        assert table.mims is getattr(ops, f"mims_gates_{suffix}")
        assert table.mim_block is getattr(ops, f"mim_block_gates_{suffix}")


# ============================================================================ cells
CONFIGS = {
    "mimn": (fc.MIMNCell, {}),
    "mimn_ln_bias": (fc.MIMNCell, dict(layer_norm=True, bias=True, unused_conv_last=True)),
    "mimblock": (fc.MIMBlock, {}),
    "mimblock_ln_bias_k5": (fc.MIMBlock, dict(layer_norm=True, bias=True, kernel_size=5)),
}
VARIANTS = {
    "cpp": ("cpp", {}),
    "cpp_memeff": ("cpp", {"memory_efficient": True}),
    "reference_memeff": ("reference", {"memory_efficient": True}),
    "triton": ("triton", {}),
    "triton_memeff": ("triton", {"memory_efficient": True}),
}
CIN = 3


def make_mim_cells(config, variants, spatial, hidden=C, dtype=torch.float32):
    """One cell per (backend, kwargs) variant, the same random weights (peepholes too)."""
    cls, kwargs = CONFIGS[config]
    cells = [cls(CIN, hidden, spatial_size=spatial, backend=b, **kwargs, **extra).to(dtype)
             for b, extra in variants]
    randomize(cells[0])
    with torch.no_grad():  # per-pixel peepholes of the size of the gates' pre-activations
        cells[0].ct_weight.normal_(0, 0.5)
        cells[0].oc_weight.normal_(0, 0.5)
    for c in cells[1:]:
        c.load_state_dict(cells[0].state_dict())
    return cells


def _layout(t, layout):
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "noncontiguous":
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    return t


def step_inputs(cell, b, h, w, dtype, layout="contiguous", steps=3, on="cpu"):
    """Per-step inputs (leaves) and an initial state: MIMBlock gets diff_h None at the first
    step, MIMNCell gets x None at the second step (no input terms)."""
    def leaf(k):
        t = torch.randn(b, k, h, w, dtype=torch.float64).to(dtype=dtype, device=on)
        return _layout(t, layout).requires_grad_()

    state = tuple(leaf(cell.hidden_size) for _ in cell.state_names)
    if isinstance(cell, fc.MIMBlock):
        inputs = [(leaf(CIN), None if t == 0 else leaf(cell.hidden_size)) for t in range(steps)]
    else:
        inputs = [(None if t == 1 else leaf(CIN),) for t in range(steps)]
    return inputs, state


def run_cell(cell, inputs, state):
    """Steps the cell; returns every state tensor it produced."""
    produced = []
    for args in inputs:
        state = cell(*args, state=state)
        produced.extend(state)
    return produced


def _input_leaves(inputs, state):
    return [t for args in inputs for t in args if t is not None] + list(state)


def _compare_cells(ref, other, inputs, state, rtol):
    out_ref = run_cell(ref, inputs, state)
    out = run_cell(other, inputs, state)
    assert len(out) == len(out_ref)
    for i, (a, e) in enumerate(zip(out, out_ref)):
        assert_close(a, e, rtol, f"output {i}")
    weights = [torch.randn_like(o) for o in out_ref]
    leaves = _input_leaves(inputs, state)
    g_ref = torch.autograd.grad(out_ref, [*leaves, *ref.parameters()], weights,
                                allow_unused=True)
    g = torch.autograd.grad(out, [*leaves, *other.parameters()], weights, allow_unused=True)
    names = [f"input {i}" for i in range(len(leaves))] + [n for n, _ in ref.named_parameters()]
    for n, a, e in zip(names, g, g_ref):
        if e is None:
            assert a is None, n
        else:
            assert_close(a, e, rtol, f"grad {n}")


CELL_LAYOUTS = ["contiguous", "channels_last", "noncontiguous"]
CELL_SHAPES = [(2, 9, 11), (1, 7, 5), (2, 1, 6)]
# The matrix runs on one cell of each kind with the options that reach the most code
# (MIMNCell: x=None at step 2; MIMBlock: LayerNorm, bias, kernel 5); the other two configs
# run in the float64 and state_dict tests. Triton (interpreted, ~30 ms a launch and 18
# launches a MIMBlock step) runs every layout at the first shape and memory_efficient
# contiguous only, over 2 steps, to keep CI within its budget.
MATRIX_CONFIGS = ["mimn", "mimblock_ln_bias_k5"]


def _cell_matrix():
    out = []
    for config in MATRIX_CONFIGS:
        for variant in ("cpp", "cpp_memeff", "reference_memeff"):
            out += [(variant, config, lay, sh, 3) for lay in CELL_LAYOUTS for sh in CELL_SHAPES]
        out += [("triton", config, lay, CELL_SHAPES[0], 2) for lay in CELL_LAYOUTS]
        out += [("triton", config, "contiguous", sh, 2) for sh in CELL_SHAPES[1:]]
        out += [("triton_memeff", config, "contiguous", CELL_SHAPES[0], 2)]
    return [pytest.param(v, c, lay, *sh, steps, id=f"{v}-{c}-{lay}-{'x'.join(map(str, sh))}")
            for v, c, lay, sh, steps in out]


@pytest.mark.parametrize("variant,config,layout,b,h,w,steps", _cell_matrix())
def test_cell_matches_reference(variant, config, layout, b, h, w, steps):
    backend, extra = VARIANTS[variant]
    if backend == "cpp" and not _ext.cpp_available():
        pytest.skip("C++ extension not built")
    if backend == "triton" and not (_ext.triton_available() and _ext.triton_interpreted()):
        pytest.skip("triton not installed, or not in interpreter mode (FASTCELLS_GPU_TESTS=1)")
    ref, other = make_mim_cells(config, [("reference", {}), (backend, extra)], (h, w))
    inputs, state = step_inputs(ref, b, h, w, torch.float32, layout, steps=steps)
    _compare_cells(ref, other, inputs, state, RTOL[torch.float32])


@requires_cpp
@pytest.mark.parametrize("config", list(CONFIGS))
def test_cell_float64(config):
    ref, cpp, eff = make_mim_cells(config, [("reference", {}), ("cpp", {}),
                                            ("cpp", {"memory_efficient": True})], (9, 11),
                                   dtype=torch.float64)
    inputs, state = step_inputs(ref, 2, 9, 11, torch.float64)
    _compare_cells(ref, cpp, inputs, state, RTOL[torch.float64])
    _compare_cells(ref, eff, inputs, state, RTOL[torch.float64])


@requires_cpp
@pytest.mark.parametrize("config", ["mimn", "mimblock"])
def test_memory_efficient_gradcheck(config):
    (cell,) = make_mim_cells(config, [("cpp", {"memory_efficient": True})], (4, 3), hidden=2,
                             dtype=torch.float64)
    inputs, state = step_inputs(cell, 1, 4, 3, torch.float64, steps=1)
    if isinstance(cell, fc.MIMBlock):
        inputs = [(inputs[0][0], torch.randn_like(state[0]).requires_grad_())]
    flat_in = [t for t in inputs[0] if t is not None]

    def fn(*ts):
        return tuple(cell(*ts[:len(flat_in)], state=tuple(ts[len(flat_in):])))

    assert torch.autograd.gradcheck(fn, (*flat_in, *state))


@requires_cpp
@pytest.mark.parametrize("config", list(CONFIGS))
def test_state_dict_is_backend_independent_and_openstl_ordered(config):
    ref, cpp, eff = make_mim_cells(config, [("reference", {}), ("cpp", {}),
                                            ("cpp", {"memory_efficient": True})], (9, 11))
    sd = ref.state_dict()
    for other in (cpp, eff):
        assert [(k, v.shape) for k, v in other.state_dict().items()] == \
            [(k, v.shape) for k, v in sd.items()]
    cls, kwargs = CONFIGS[config]
    public = (openstl.MIMBlock if cls is fc.MIMBlock else openstl.MIMN)(
        C, C, 9, 11, kwargs.get("kernel_size", 3), 1, kwargs.get("layer_norm", False))
    if not kwargs.get("bias"):  # OpenSTL's convolutions have none
        keep_last = cls is fc.MIMBlock or kwargs.get("unused_conv_last")
        assert list(sd) == [k for k in public.state_dict()
                            if keep_last or not k.startswith("conv_last")]


def test_spatial_size_is_required_and_checked():
    with pytest.raises(ValueError, match="spatial_size.*required"):
        fc.MIMBlock(4, 4)
    with pytest.raises(ValueError, match="spatial_size.*required"):
        fc.MIMNCell(4, 4)
    with pytest.raises(ValueError, match="spatial_size"):
        fc.MIMNCell(4, 4, spatial_size=(0, 3))
    cell = fc.MIMBlock(4, 4, spatial_size=(6, 5), backend="reference")
    with pytest.raises(ValueError, match=r"x: spatial size \(5, 6\) differs .* \(6, 5\)"):
        cell(torch.randn(1, 4, 5, 6))
    with pytest.raises(ValueError, match="diff_h: spatial size"):
        cell(torch.randn(1, 4, 6, 5), torch.randn(1, 4, 6, 6))
    with pytest.raises(ValueError, match="diff_h"):
        cell(torch.randn(1, 4, 6, 5), torch.randn(1, 3, 6, 5))
    with pytest.raises(ValueError, match="state"):
        cell(torch.randn(1, 4, 6, 5), state=(torch.zeros(1, 4, 6, 5),) * 3)
    mimn = fc.MIMNCell(3, 4, spatial_size=6, backend="reference")
    with pytest.raises(ValueError, match="state.*x=None"):
        mimn(None)
    with pytest.raises(ValueError, match=r"state\[0\] \(h\): spatial size"):
        mimn(None, (torch.zeros(1, 4, 6, 5), torch.zeros(1, 4, 6, 5)))
    h, c = mimn(None, (torch.zeros(1, 4, 6, 6), torch.zeros(1, 4, 6, 6)))
    assert h.shape == c.shape == (1, 4, 6, 6)


def test_kind_and_auto_preference():
    cell = fc.MIMBlock(2, 2, spatial_size=3)
    assert cell.kind == "mim" and fc.MIMNCell(2, 2, spatial_size=3).kind == "mim"
    assert fc.backends.AUTO_PREFERENCE["mim"]
    if _ext.cpp_available():
        assert cell.backend == "cpp"


# ============================================================================ vs OpenSTL
@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=requires_cpp)])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_mimblock_equals_openstl_over_calls(backend, layer_norm):
    """MIMBlock vs the re-creation of OpenSTL's: outputs, and input and parameter gradients,
    over several calls, with OpenSTL's convlstm_c (carried across calls, detached before
    each use) as the explicit state n, detached between calls."""
    torch.manual_seed(0)
    H, W = 6, 7
    public = openstl.MIMBlock(C, C, H, W, 3, 1, layer_norm).double()
    randomize(public)
    with torch.no_grad():
        public.ct_weight.normal_(0, 0.5)
        public.oc_weight.normal_(0, 0.5)
    cell = fc.MIMBlock(C, C, 3, spatial_size=(H, W), layer_norm=layer_norm,
                       backend=backend).double()
    cell.load_state_dict(public.state_dict())
    xs = [torch.randn(2, C, H, W, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    ds = [None] + [torch.randn(2, C, H, W, dtype=torch.float64, requires_grad=True)
                   for _ in range(2)]
    outs_p, outs_c, ns = [], [], []
    hcm, state = (None, None, None), None
    for x, d in zip(xs, ds):
        hcm = public(x, d, *hcm)
        outs_p.extend(hcm)
        state = cell(x, d, state)
        outs_c.extend(state[:3])
        ns.append((state[3], public.convlstm_c))
        state = (*state[:3], state[3].detach())  # OpenSTL's convlstm_c.detach()
    for a, e in zip(outs_c, outs_p):
        assert_close(a, e, RTOL[torch.float64])
    for a, e in ns:
        assert_close(a, e, RTOL[torch.float64])
    weights = [torch.randn_like(o) for o in outs_p]
    leaves = [*xs, *ds[1:]]
    g_p = torch.autograd.grad(outs_p, [*leaves, *public.parameters()], weights)
    g_c = torch.autograd.grad(outs_c, [*leaves, *cell.parameters()], weights)
    for a, e in zip(g_c, g_p):
        assert_close(a, e, RTOL[torch.float64])


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=requires_cpp)])
def test_mimn_equals_openstl(backend):
    H, W = 5, 6
    public = openstl.MIMN(C, C, H, W, 3, 1, True).double()
    randomize(public)
    cell = fc.MIMNCell(C, C, spatial_size=(H, W), layer_norm=True, unused_conv_last=True,
                       backend=backend).double()
    cell.load_state_dict(public.state_dict())
    x = torch.randn(2, C, H, W, dtype=torch.float64)
    state = tuple(torch.randn(2, C, H, W, dtype=torch.float64) for _ in range(2))
    for a, e in zip(cell(x), public(x, None, None)):
        assert_close(a, e, RTOL[torch.float64])
    for a, e in zip(cell(None, state), public(None, *state)):
        assert_close(a, e, RTOL[torch.float64])


# ============================================================================ torch.compile
@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=requires_cpp),
                                     pytest.param("triton", marks=requires_triton)])
@pytest.mark.parametrize("memory_efficient", [False, True], ids=["default", "memeff"])
@pytest.mark.parametrize("config", ["mimn", "mimblock"])
def test_fullgraph_aot_eager(config, memory_efficient, backend):
    torch._dynamo.reset()
    ref, cell = make_mim_cells(config, [("reference", {}),
                                        (backend, {"memory_efficient": memory_efficient})],
                               (9, 11))
    x = torch.randn(2, CIN, 9, 11, requires_grad=True)
    args = (x, torch.randn(2, C, 9, 11)) if config == "mimblock" else (x,)
    out_c = torch.compile(cell, fullgraph=True, backend="aot_eager")(*args)[0]
    out_r = ref(*args)[0]
    assert_close(out_c, out_r, RTOL[torch.float32])
    g_c = torch.autograd.grad(out_c.sum(), [x, *cell.parameters()], allow_unused=True)
    g_r = torch.autograd.grad(out_r.sum(), [x, *ref.parameters()], allow_unused=True)
    for a, e in zip(g_c, g_r):
        assert (a is None) == (e is None)
        if e is not None:
            assert_close(a, e, RTOL[torch.float32])


# ============================================================================ CUDA C++
# The "cuda" backend on the host emulation of its kernels (tests/test_cuda_backend.py builds
# it and registers its CPU kernels on the *_cuda ops), or on a GPU when there is one.
from .test_cuda_backend import _planes as _cuda_planes  # noqa: E402
# (the tests' `device` argument is this fixture: noqa F811 on their def lines)
from .test_cuda_backend import device, emulation  # noqa: E402,F401

CUDA_LAYOUTS = ["contiguous", "channels_last", "channel_slice", "channels_last_slice",
                "strided", "transposed", "mixed"]


def _cuda_check(name, args, dtype):
    """The CUDA op against the eager reference (float32/64: RTOL; 16-bit: no worse than twice
    eager's error, both against float64), outputs and input gradients."""
    op = OPS[name][0]
    ref, cuda = getattr(ops, f"{op}_ref"), getattr(ops, f"{op}_cuda")
    out64, _ = _run_op(ref, args, cast=torch.float64)
    weights = [torch.randn(o.shape, dtype=torch.float64).to(o.device) for o in out64]
    truth = _run_op(ref, args, weights, cast=torch.float64)
    kernel, eager = _run_op(cuda, args, weights), _run_op(ref, args, weights)
    for kind in range(2):
        for i, (k, e, t) in enumerate(zip(kernel[kind], eager[kind], truth[kind])):
            label = f"{name} {('output', 'grad')[kind]} {i}"
            assert k.dtype == dtype, label
            if dtype in RTOL:
                assert_close(k, e, RTOL[dtype], label)
            else:
                assert torch.isfinite(k).all(), label
                assert rel_error(k, t) <= 2 * rel_error(e, t), label


def _cuda_inputs(name, b, h, w, dtype, on, layout):
    return op_inputs(name, b, h, w, dtype, layout, planes=lambda k, i: _cuda_planes(
        b, k, h, w, dtype, on, layout, i))


@pytest.mark.parametrize("layout", CUDA_LAYOUTS)
@pytest.mark.parametrize("name", list(OPS))
def test_cuda_op_layouts(device, name, layout):  # noqa: F811
    _cuda_check(name, _cuda_inputs(name, 2, 9, 11, torch.float32, device, layout),
                torch.float32)


@pytest.mark.parametrize("shape", [(1, 7, 5), (3, 1, 13), (2, 6, 1), (1, 1, 1), (2, 23, 25)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(OPS))
def test_cuda_op_shapes(device, name, shape):  # noqa: F811
    _cuda_check(name, _cuda_inputs(name, *shape, torch.float32, device, "channels_last"),
                torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("name", list(OPS))
def test_cuda_op_dtypes(device, name, dtype):  # noqa: F811
    _cuda_check(name, _cuda_inputs(name, 2, 6, 7, dtype, device, "channels_last_slice"), dtype)


@pytest.mark.parametrize("name", list(OPS))
def test_cuda_op_gradcheck_float64(device, name):  # noqa: F811
    args = [a.requires_grad_() if a is not None else None
            for a in _cuda_inputs(name, 2, 3, 4, torch.float64, device, "contiguous")]
    present = [i for i, a in enumerate(args) if a is not None]
    fused = getattr(ops, f"{OPS[name][0]}_cuda")

    def fn(*ts):
        full = list(args)
        for i, t in zip(present, ts):
            full[i] = t
        return tuple(flat_outputs(fused(*full)))

    assert torch.autograd.gradcheck(fn, [args[i] for i in present])


@pytest.mark.parametrize("i", range(5))
def test_cuda_opcheck(device, i):  # noqa: F811
    op, args = op_samples("_cuda")[i]
    torch.library.opcheck(op, [a.to(device) if isinstance(a, torch.Tensor) else a for a in args])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("variant", ["default", "memeff"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("config", MATRIX_CONFIGS)
def test_cuda_cell_matches_reference(device, config, layout, variant, dtype):  # noqa: F811
    extra = {"memory_efficient": True} if variant == "memeff" else {}
    ref, cell = make_mim_cells(config, [("reference", {}), ("cuda", extra)], (7, 6),
                               dtype=dtype)
    ref, cell = ref.to(device), cell.to(device)
    inputs, state = step_inputs(ref, 2, 7, 6, dtype, layout, on=device)
    rtol = 1e-3 if device == "cuda" and dtype == torch.float32 else RTOL[dtype]
    _compare_cells(ref, cell, inputs, state, rtol)
