"""Every cell x backend against the reference backend over several steps."""
import pytest
import torch
import torch.nn.functional as F

import fastcells as fc
from fastcells import _ext

from .conftest import requires_cpp
from .helpers import CELL_CONFIGS, RTOL, assert_close, make_cells

VARIANTS = {
    "cpp": ("cpp", {}),
    "cpp_memeff": ("cpp", {"memory_efficient": True}),
    "reference_memeff": ("reference", {"memory_efficient": True}),
    "triton": ("triton", {}),
    "triton_memeff": ("triton", {"memory_efficient": True}),
}


def _layout(t, layout):
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "noncontiguous":
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    return t


def _state_tensors(state):
    out = []
    for s in state:
        out.extend(s if isinstance(s, tuple) else [s])
    return out


def _leaves(state):
    seen, out = set(), []
    for t in _state_tensors(state):
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def _random_state(cell, b, h, w, dtype, layout="contiguous"):
    """A random state (leaves requiring grad) in the given memory layout."""
    shape = (b, cell.hidden_size, h, w)

    def leaf():
        return _layout(torch.randn(shape, dtype=dtype), layout).requires_grad_()

    if isinstance(cell, fc.ConvTTLSTMCell):
        hist = tuple(leaf() for _ in range(cell.steps))
        return (hist[-1], leaf(), hist)
    return tuple(leaf() for _ in cell.state_names)


def _run(cell, xs, state, deltas=False):
    """Steps the cell over xs; returns every state tensor produced (for the loss)."""
    produced = []
    for x in xs:
        if deltas:
            state, d = cell(x, state, return_deltas=True)
            produced.extend(d)
        else:
            state = cell(x, state)
        produced.extend(_state_tensors(state)[:3])
    return produced


SHAPES = [(2, 9, 11), (1, 7, 5), (2, 1, 6)]
LAYOUTS = ["contiguous", "channels_last", "noncontiguous"]
# The Triton legs of the PredRNN++ cells run at one shape, every layout: their six kernels
# take seconds a step in the interpreter (CI time), and test_gate_ops checks each kernel at
# every shape and layout; here they check the cell's wiring.
TRITON_SHAPES = {"causal_lstm": [(1, 7, 5)], "causal_lstm_bias_ln": [(1, 7, 5)]}


def _cell_cases():
    for variant, (backend, _) in VARIANTS.items():
        for config in CELL_CONFIGS:
            shapes = TRITON_SHAPES.get(config, SHAPES) if backend == "triton" else SHAPES
            for layout in LAYOUTS:
                for shape in shapes:
                    yield pytest.param(variant, config, layout, *shape,
                                       id=f"{'-'.join(map(str, shape))}-{layout}-{config}-"
                                          f"{variant}")


@pytest.mark.parametrize("variant,config,layout,b,h,w", list(_cell_cases()))
def test_cell_matches_reference(variant, config, layout, b, h, w):
    backend, extra = VARIANTS[variant]
    if backend == "cpp" and not _ext.cpp_available():
        pytest.skip("C++ extension not built")
    if backend == "triton" and not (_ext.triton_available() and _ext.triton_interpreted()):
        pytest.skip("triton not installed, or not in interpreter mode (FASTCELLS_GPU_TESTS=1)")
    dtype = torch.float32
    ref, other = make_cells(config, [("reference", {}), (backend, extra)], spatial=(h, w))
    xs = [_layout(torch.randn(b, 3, h, w, dtype=dtype), layout).requires_grad_() for _ in range(3)]
    init = _random_state(ref, b, h, w, dtype, layout)
    deltas = isinstance(ref, fc.SpatioTemporalLSTMCell)
    out_ref = _run(ref, xs, init, deltas)
    out_other = _run(other, xs, init, deltas)
    for i, (a, e) in enumerate(zip(out_other, out_ref)):
        assert_close(a, e, RTOL[dtype], f"output {i}")
    weights = [torch.randn_like(o) for o in out_ref]
    leaves_ref = [*xs, *_leaves(init), *ref.parameters()]
    leaves_other = [*xs, *_leaves(init), *other.parameters()]
    g_ref = torch.autograd.grad(out_ref, leaves_ref, weights, allow_unused=True)
    g_other = torch.autograd.grad(out_other, leaves_other, weights, allow_unused=True)
    for i, (a, e) in enumerate(zip(g_other, g_ref)):
        if e is None:
            assert a is None
        else:
            assert_close(a, e, RTOL[dtype], f"grad {i}")


@requires_cpp
@pytest.mark.parametrize("config", list(CELL_CONFIGS))
def test_cell_float64(config):
    """float64: the fused backends equal the reference to rounding, every output and grad."""
    dtype = torch.float64
    ref, cpp, eff = make_cells(config, [("reference", {}), ("cpp", {}),
                                        ("cpp", {"memory_efficient": True})], dtype=dtype)
    xs = [torch.randn(2, 3, 9, 11, dtype=dtype, requires_grad=True) for _ in range(3)]
    init = _random_state(ref, 2, 9, 11, dtype)
    results = []
    for cell in (ref, cpp, eff):
        out = _run(cell, xs, init)
        weights = [torch.ones_like(o) * (i + 1) for i, o in enumerate(out)]
        grads = torch.autograd.grad(out, [*xs, *_leaves(init), *cell.parameters()], weights,
                                    allow_unused=True)
        results.append((out, grads))
    for out, grads in results[1:]:
        for a, e in zip(out, results[0][0]):
            assert_close(a, e, RTOL[dtype])
        for a, e in zip(grads, results[0][1]):
            assert (a is None) == (e is None)
            if e is not None:
                assert_close(a, e, RTOL[dtype])


@requires_cpp
@pytest.mark.parametrize("config", ["convlstm_peephole", "stlstm", "mklstm", "convttlstm_lags",
                                    "causal_lstm", "split_convlstm_bias_ln"])
def test_memory_efficient_gradcheck(config):
    """gradcheck through the recompute Function (inputs and state)."""
    (cell,) = make_cells(config, [("cpp", {"memory_efficient": True})], hidden=2,
                         spatial=(4, 3), dtype=torch.float64)
    x = torch.randn(1, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    state = _random_state(cell, 1, 4, 3, torch.float64)
    convtt = isinstance(cell, fc.ConvTTLSTMCell)
    flat = [state[1], *state[2]] if convtt else list(state)

    def fn(x, *flat):
        st = (flat[-1], flat[0], tuple(flat[1:])) if convtt else tuple(flat)
        return tuple(_state_tensors(cell(x, st))[:2])

    assert torch.autograd.gradcheck(fn, (x, *flat))


@requires_cpp
@pytest.mark.parametrize("config", list(CELL_CONFIGS))
def test_state_dict_is_backend_independent(config):
    ref, cpp, eff = make_cells(config, [("reference", {}), ("cpp", {}),
                                        ("cpp", {"memory_efficient": True})])
    sd = ref.state_dict()
    for other in (cpp, eff):
        o = other.state_dict()
        assert list(o) == list(sd)
        assert all(o[k].shape == sd[k].shape for k in sd)
    # a checkpoint saved from the fused cell loads into the reference cell and vice versa
    fresh_ref = make_cells(config, [("reference", {})])[0]
    fresh_ref.load_state_dict(cpp.state_dict())
    x = torch.randn(2, 3, 9, 11)
    assert_close(fresh_ref(x)[0], cpp(x)[0], RTOL[torch.float32])


@requires_cpp
def test_backend_reporting():
    cell = fc.ConvLSTMCell(3, 4)
    assert cell.requested_backend == "auto"
    assert cell.backend == "cpp"
    assert fc.ConvLSTMCell(3, 4, backend="reference").backend == "reference"
    assert cell.to(torch.bfloat16).backend == "reference"  # cpp has no bfloat16 kernels
    assert "cpp" in fc.available_backends("cpu")


def test_reference_runs_in_bfloat16():
    cell = fc.MKLSTMCell(3, 4, backend="reference").to(torch.bfloat16)
    h, c1, c2 = cell(torch.randn(1, 3, 5, 5, dtype=torch.bfloat16))
    assert h.dtype == torch.bfloat16 and torch.isfinite(h.float()).all()


def test_convtt_window_weights_match_nvlabs_conv3d():
    """P_l stored as NVlabs' Conv3d (R, C, K, K, D) acts on the window [h_0; ...; h_{D-1}]."""
    cell = fc.ConvTTLSTMCell(2, 3, order=2, steps=4, rank=2, kernel_size=3, backend="reference")
    hs = [torch.randn(1, 3, 6, 5) for _ in range(cell.lags)]
    conv3d = cell.preprocess[0]
    nvlabs = conv3d(torch.stack(hs, dim=-1)).squeeze(-1)
    p = dict(cell.named_parameters())
    ours = F.conv2d(torch.cat(hs, 1), cell._window_weight(p, 0), conv3d.bias, padding=1)
    assert_close(ours, nvlabs, 1e-6)


def test_convtt_history_shifts():
    cell = fc.ConvTTLSTMCell(2, 3, steps=4, order=2, backend="reference")
    h, c, hist = cell(torch.randn(1, 2, 5, 5))
    assert len(hist) == 4 and hist[-1] is h and hist[0].abs().sum() == 0
    h2, _, hist2 = cell(torch.randn(1, 2, 5, 5), (h, c, hist))
    assert hist2[-2] is h and hist2[-1] is h2


def test_reference_stlstm_matches_equations():
    """The reference backend is a transcription of CELLS.md section 2 (checked by hand here)."""
    cell = fc.SpatioTemporalLSTMCell(2, 3, kernel_size=3, backend="reference")
    x, h, c, m = torch.randn(1, 2, 4, 4), *(torch.randn(1, 3, 4, 4) for _ in range(3))

    def conv(mod, t):
        return mod[0](t)

    i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = torch.split(conv(cell.conv_x, x), 3, 1)
    i_h, f_h, g_h, o_h = torch.split(conv(cell.conv_h, h), 3, 1)
    i_m, f_m, g_m = torch.split(conv(cell.conv_m, m), 3, 1)
    c_t = torch.sigmoid(f_x + f_h + 1) * c + torch.sigmoid(i_x + i_h) * torch.tanh(g_x + g_h)
    m_t = torch.sigmoid(f_xp + f_m + 1) * m + torch.sigmoid(i_xp + i_m) * torch.tanh(g_xp + g_m)
    cm = torch.cat([c_t, m_t], 1)
    h_t = torch.sigmoid(o_x + o_h + conv(cell.conv_o, cm)) * torch.tanh(cell.conv_last(cm))
    out = cell(x, (h, c, m))
    for a, e in zip(out, (h_t, c_t, m_t)):
        assert_close(a, e, 1e-6)


def test_reference_mklstm_matches_equations():
    cell = fc.MKLSTMCell(2, 3, backend="reference")
    x, h, c1, c2 = torch.randn(1, 2, 6, 6), *(torch.randn(1, 3, 6, 6) for _ in range(3))
    z1 = cell.conv_x2h[0](x) + cell.conv_h2h[0](h)
    z2 = cell.conv_x2h[1](x) + cell.conv_h2h[1](h)
    i1, f1, g1, o1 = z1.chunk(4, 1)
    i2, f2, g2, o2 = z2.chunk(4, 1)
    n1 = torch.sigmoid(f1) * c1 + torch.sigmoid(i1) * torch.tanh(g1)
    n2 = torch.sigmoid(f2) * c2 + torch.sigmoid(i2) * torch.tanh(g2)
    o = torch.sigmoid(o1 + o2 + cell.conv_c2o[0](n1) + cell.conv_c2o[1](n2))
    h_t = o * torch.tanh(cell.conv_out(torch.cat([n1, n2], 1)))
    for a, e in zip(cell(x, (h, c1, c2)), (h_t, n1, n2)):
        assert_close(a, e, 1e-6)


def test_reference_convlstm_matches_equations():
    cell = fc.ConvLSTMCell(2, 3, forget_bias=0.5, peephole=True, backend="reference")
    torch.nn.init.normal_(cell.peephole_weight)
    x, h, c = torch.randn(1, 2, 5, 5), torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5)
    i, f, o, g = cell.conv(torch.cat([x, h], 1)).chunk(4, 1)
    w = cell.peephole_weight.view(3, 1, 3, 1, 1)
    c_t = torch.sigmoid(f + 0.5 + w[1] * c) * c + torch.sigmoid(i + w[0] * c) * torch.tanh(g)
    h_t = torch.sigmoid(o + w[2] * c_t) * torch.tanh(c_t)
    for a, e in zip(cell(x, (h, c)), (h_t, c_t)):
        assert_close(a, e, 1e-6)
