"""MIMCell (MS-RNN's MIM_Cell, fastcells/cells/mimcell.py): every backend against the
reference (layouts, odd sizes, batch 1, both layer kinds, memory_efficient), float64 against
a re-creation of MS-RNN's cell, gradcheck, state_dict, torch.compile and input errors. Its
step composes the ConvLSTM and output gate ops, whose own matrices (opcheck included) are in
test_gate_ops.py and test_cuda_backend.py."""
import pytest
import torch

import fastcells as fc
from fastcells import _ext

from .conftest import requires_cpp, requires_triton
from .helpers import RTOL, assert_close, randomize
from .models_helpers import one_thread  # noqa: F401 (fixture)
from .public import msrnn_mim

# tiny tensors: a second OpenMP thread only adds overhead (models_helpers.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")

CIN, C = 3, 4
VARIANTS = {
    "cpp": ("cpp", {}),
    "cpp_memeff": ("cpp", {"memory_efficient": True}),
    "reference_memeff": ("reference", {"memory_efficient": True}),
    "triton": ("triton", {}),
    "triton_memeff": ("triton", {"memory_efficient": True}),
}


def make_cells(variants, cin=CIN, hidden=C, dtype=torch.float32, **kwargs):
    """One MIMCell per (backend, kwargs) variant, the same random weights."""
    cells = [fc.MIMCell(cin, hidden, backend=b, **kwargs, **extra).to(dtype)
             for b, extra in variants]
    randomize(cells[0])
    for c in cells[1:]:
        c.load_state_dict(cells[0].state_dict())
    return cells


def _layout(t, layout):
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "noncontiguous":
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    return t


def step_inputs(b, h, w, dtype, layout="contiguous", steps=2, on="cpu", cin=CIN):
    """Per-step (x, x_prev) leaves, x_prev None at the first step, and (m, state)."""
    def leaf(k):
        t = torch.randn(b, k, h, w, dtype=torch.float64).to(dtype=dtype, device=on)
        return _layout(t, layout).requires_grad_()

    inputs = [(leaf(cin), None if t == 0 else leaf(cin)) for t in range(steps)]
    return inputs, leaf(C), tuple(leaf(C) for _ in range(4))


def run_cell(cell, inputs, m, state, first_layer):
    produced = []
    for x, x_prev in inputs:
        *state, m = cell(x, x_prev, m, state, first_layer=first_layer)
        produced.extend([*state, m])
    return produced


def compare(ref, other, inputs, m, state, first_layer, rtol):
    out_ref = run_cell(ref, inputs, m, state, first_layer)
    out = run_cell(other, inputs, m, state, first_layer)
    assert len(out) == len(out_ref)
    for i, (a, e) in enumerate(zip(out, out_ref)):
        assert_close(a, e, rtol, f"output {i}")
    weights = [torch.randn_like(o) for o in out_ref]
    leaves = [t for args in inputs for t in args if t is not None] + [m, *state]
    g_ref = torch.autograd.grad(out_ref, [*leaves, *ref.parameters()], weights,
                                allow_unused=True)
    g = torch.autograd.grad(out, [*leaves, *other.parameters()], weights, allow_unused=True)
    names = [f"input {i}" for i in range(len(leaves))] + [n for n, _ in ref.named_parameters()]
    for n, a, e in zip(names, g, g_ref):
        assert (a is None) == (e is None), n
        if e is not None:
            assert_close(a, e, rtol, f"grad {n}")


LAYOUTS = ["contiguous", "channels_last", "noncontiguous"]
SHAPES = [(2, 9, 11), (1, 7, 5), (2, 1, 6)]


def _matrix():
    """C++ and the memory-efficient modes: every layout at every shape, both layer kinds.
    Triton (interpreted, ~30 ms a launch, 7 launches a step): each layout and shape once,
    memory_efficient once (CI time)."""
    out = [(v, lay, sh, first) for v in ("cpp", "cpp_memeff", "reference_memeff")
           for lay in LAYOUTS for sh in SHAPES for first in (False, True)]
    out += [("triton", "contiguous", SHAPES[0], False),
            ("triton", "channels_last", SHAPES[1], True),
            ("triton", "noncontiguous", SHAPES[2], False),
            ("triton_memeff", "contiguous", SHAPES[1], True)]
    return [pytest.param(v, lay, *sh, first,
                         id=f"{v}-{lay}-{'x'.join(map(str, sh))}-{'first' if first else 'upper'}")
            for v, lay, sh, first in out]


@pytest.mark.parametrize("variant,layout,b,h,w,first_layer", _matrix())
def test_cell_matches_reference(variant, layout, b, h, w, first_layer):
    backend, extra = VARIANTS[variant]
    if backend == "cpp" and not _ext.cpp_available():
        pytest.skip("C++ extension not built")
    if backend == "triton" and not (_ext.triton_available() and _ext.triton_interpreted()):
        pytest.skip("triton not installed, or not in interpreter mode (FASTCELLS_GPU_TESTS=1)")
    ref, other = make_cells([("reference", {}), (backend, extra)])
    inputs, m, state = step_inputs(b, h, w, torch.float32, layout)
    compare(ref, other, inputs, m, state, first_layer, RTOL[torch.float32])


@requires_cpp
@pytest.mark.parametrize("kwargs", [{}, {"bias": False, "kernel_size": 5}],
                         ids=["default", "nobias_k5"])
def test_cell_float64(kwargs):
    ref, cpp, eff = make_cells([("reference", {}), ("cpp", {}),
                                ("cpp", {"memory_efficient": True})], dtype=torch.float64,
                               **kwargs)
    for first_layer in (False, True):
        inputs, m, state = step_inputs(2, 6, 7, torch.float64)
        compare(ref, cpp, inputs, m, state, first_layer, RTOL[torch.float64])
        compare(ref, eff, inputs, m, state, first_layer, RTOL[torch.float64])


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=requires_cpp)])
def test_cell_equals_msrnn(backend):
    """Against the re-creation of MS-RNN's MIM_Cell, float64, both layer kinds, chained
    over steps: outputs and input and parameter gradients."""
    public = msrnn_mim.MIM_Cell(C, C, [2, 5, 6], 3, 1, 1).double()
    randomize(public)
    cell = fc.MIMCell(C, C, backend=backend).double()
    cell.load_state_dict({k[1:]: v for k, v in public.state_dict().items()})
    for layer in (0, 1):
        xs = [torch.randn(2, C, 5, 6, dtype=torch.float64, requires_grad=True)
              for _ in range(3)]
        outs_p, outs_c = [], []
        m_p = m_c = hid_p = state = None
        for t, x in enumerate(xs):
            x_prev = xs[t - 1] if t else None
            h, m_p, hid_p = public(x, x_prev, m_p, hid_p, layer)
            outs_p += [m_p, *hid_p]
            *state, m_c = cell(x, x_prev, m_c, state, first_layer=layer == 0)
            outs_c += [m_c, *state]
        for a, e in zip(outs_c, outs_p):
            assert_close(a, e, RTOL[torch.float64])
        weights = [torch.randn_like(o) for o in outs_p]
        g_p = torch.autograd.grad(outs_p, [*xs, *public.parameters()], weights,
                                  allow_unused=True)
        g_c = torch.autograd.grad(outs_c, [*xs, *cell.parameters()], weights,
                                  allow_unused=True)
        for a, e in zip(g_c, g_p):
            assert (a is None) == (e is None)
            if e is not None:
                assert_close(a, e, RTOL[torch.float64])


@requires_cpp
@pytest.mark.parametrize("first_layer", [False, True])
def test_gradcheck(first_layer):
    (cell,) = make_cells([("cpp", {"memory_efficient": True})], cin=2, hidden=2,
                         dtype=torch.float64)
    leaves = [torch.randn(1, 2, 3, 2, dtype=torch.float64, requires_grad=True)
              for _ in range(7)]

    def fn(x, x_prev, m, *state):
        return tuple(cell(x, x_prev, m, state, first_layer=first_layer))

    # fast mode (random projections of the Jacobian): the full one reruns the 20-convolution
    # step hundreds of times
    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)


@requires_cpp
def test_state_dict_is_backend_independent_and_msrnn_ordered():
    ref, cpp, eff = make_cells([("reference", {}), ("cpp", {}),
                                ("cpp", {"memory_efficient": True})], cin=C)
    sd = [(k, v.shape) for k, v in ref.state_dict().items()]
    for other in (cpp, eff):
        assert [(k, v.shape) for k, v in other.state_dict().items()] == sd
    public = msrnn_mim.MIM_Cell(C, C, [1, 5, 5], 3, 1, 1)
    assert [("_" + k, s) for k, s in sd] == [(k, v.shape) for k, v in
                                             public.state_dict().items()]


def test_defaults_and_errors():
    cell = fc.MIMCell(CIN, C, backend="reference")
    x = torch.randn(1, CIN, 5, 6)
    h, c, n, s, m = cell(x)  # x_prev, m and the state default to zeros
    zeros = torch.zeros(1, C, 5, 6)
    want = cell(x, torch.zeros_like(x), zeros, (zeros,) * 4)
    for a, e in zip((h, c, n, s, m), want):
        assert torch.equal(a, e)
    with pytest.raises(ValueError, match="x_prev"):
        cell(x, torch.randn(1, C, 5, 6))
    with pytest.raises(ValueError, match="m: expected shape"):
        cell(x, None, torch.randn(1, C, 5, 5))
    with pytest.raises(ValueError, match="state"):
        cell(x, None, None, (zeros,) * 3)
    with pytest.raises(TypeError, match="x_prev: dtype"):
        cell(x, x.double())
    with pytest.raises(ValueError, match="kernel_size"):
        fc.MIMCell(CIN, C, kernel_size=4)
    assert "MIMCell" in fc.__all__ and cell.kind == "convlstm"


@pytest.mark.parametrize("backend,memory_efficient", [
    pytest.param("cpp", True, marks=requires_cpp, id="cpp-memeff"),
    pytest.param("triton", False, marks=requires_triton, id="triton-default")])
def test_fullgraph_aot_eager(backend, memory_efficient):
    torch._dynamo.reset()
    ref, cell = make_cells([("reference", {}), (backend, {"memory_efficient": memory_efficient})])
    x = torch.randn(2, CIN, 6, 7, requires_grad=True)
    x_prev = torch.randn(2, CIN, 6, 7)
    out_c = torch.compile(cell, fullgraph=True, backend="aot_eager")(x, x_prev)
    out_r = ref(x, x_prev)
    for a, e in zip(out_c, out_r):
        assert_close(a, e, RTOL[torch.float32])
    g_c = torch.autograd.grad(out_c[0].sum(), [x, *cell.parameters()], allow_unused=True)
    g_r = torch.autograd.grad(out_r[0].sum(), [x, *ref.parameters()], allow_unused=True)
    for a, e in zip(g_c, g_r):
        assert (a is None) == (e is None)
        if e is not None:
            assert_close(a, e, RTOL[torch.float32])


# The "cuda" backend on the host emulation of its kernels (tests/test_cuda_backend.py builds
# it), or on a GPU when there is one.
from .test_cuda_backend import device, emulation  # noqa: E402,F401


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("variant", ["default", "memeff"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_cell_matches_reference(device, layout, variant, dtype):  # noqa: F811
    extra = {"memory_efficient": True} if variant == "memeff" else {}
    ref, cell = make_cells([("reference", {}), ("cuda", extra)], dtype=dtype)
    ref, cell = ref.to(device), cell.to(device)
    rtol = 1e-3 if device == "cuda" and dtype == torch.float32 else RTOL[dtype]
    for first_layer in (False, True):
        inputs, m, state = step_inputs(2, 7, 6, dtype, layout, on=device)
        compare(ref, cell, inputs, m, state, first_layer, rtol)
