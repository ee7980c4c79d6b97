"""The CTT recurrence in Triton (fastcells/kernels/ctt.py) against the eager reference.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (conftest.py), so the
sizes are small; each case still covers odd sizes, batch 1, several orders and lags,
ranks 3 and 8, kernels 1, 3 and 5, and history states in different memory layouts.
Kernel outputs start NaN-filled (``POISON``): an element a kernel forgets to write fails.
"""
import pytest
import torch

import fastcells as fc
from fastcells.ops.ctt import ctt_chain_ref, ctt_chain_triton

from .conftest import requires_triton
from .helpers import RTOL, assert_close, make_cells, rel_error

pytestmark = requires_triton


@pytest.fixture(autouse=True)
def _poison():
    """NaN-filled outputs for these tests, and afterwards whatever was set before (the
    conftest's session-wide setting), so that test order does not matter."""
    from fastcells.kernels import layout
    before = layout.POISON[0]
    layout.POISON[0] = True
    yield
    layout.POISON[0] = before


def _state(b, c, h, w, dtype, layout):
    """A (b, c, h, w) history state and the leaf its gradient is taken at (a view for the
    slices, so the gradient is compared where the kernels read)."""
    if layout == "contiguous":
        t = torch.randn(b, c, h, w, dtype=dtype)
    elif layout == "channels_last":
        t = torch.randn(b, c, h, w, dtype=dtype).to(memory_format=torch.channels_last)
    elif layout == "channel_slice":  # a slice of a larger buffer, batch stride > c*h*w
        t = torch.randn(b, c + 3, h, w, dtype=dtype)[:, 2:2 + c]
    elif layout == "strided":  # every other column: H and W do not collapse into one index
        t = torch.randn(b, c, h, 2 * w, dtype=dtype)[..., ::2]
    else:
        raise ValueError(layout)
    return t.requires_grad_() if t.is_leaf else t.detach().requires_grad_()


LAYOUTS = ["contiguous", "channels_last", "channel_slice", "strided"]


def _chain(b, c, r, hw, k, m, n, dtype=torch.float32, layout="contiguous", bias=True):
    """Random history (M states) and CTT weights with fan-in scaling (unit-variance v)."""
    d = m - n + 1
    layouts = [LAYOUTS[i % 4] for i in range(m)] if layout == "mixed" else [layout] * m
    history = [_state(b, c, *hw, dtype, lay) for lay in layouts]

    def weight(*shape):
        fan_in = shape[1] * shape[2] * shape[3] * (shape[4] if len(shape) > 4 else 1)
        return (torch.randn(shape, dtype=dtype) / fan_in ** 0.5).requires_grad_()

    p_weights = [weight(r, c, k, k, d) for _ in range(n)]
    g_weights = [weight(r, r, k, k) for _ in range(n - 1)]
    p_biases = [(torch.randn(r, dtype=dtype) * 0.5).requires_grad_() for _ in range(n)]
    g_biases = [(torch.randn(r, dtype=dtype) * 0.5).requires_grad_() for _ in range(n - 1)]
    return history, p_weights, p_biases if bias else None, g_weights, g_biases if bias else None


def _leaves(chain):
    return [t for group in chain if group is not None for t in group]


def _run(fn, chain, head, grad):
    """v_{N-1} and the gradients of <v_{N-1}, grad> w.r.t. every input."""
    v = fn(*chain, head=head)
    return v, torch.autograd.grad(v, _leaves(chain), grad)


def _as(chain, dtype):
    """The same inputs in another dtype (leaves of their own)."""
    return tuple(None if group is None else [t.detach().to(dtype).requires_grad_()
                                             for t in group] for group in chain)


CASES = {
    # name: (B, C, R, (H, W), K, M, N, head, layout, bias)
    "odd_7x9_lags3": (1, 3, 3, (7, 9), 3, 4, 2, 1, "contiguous", True),
    "k5_rank8_order3": (2, 2, 8, (5, 5), 5, 3, 3, 2, "channels_last", True),
    "order1_channel_slices_nobias": (1, 3, 3, (5, 7), 3, 3, 1, 0, "channel_slice", False),
    "strided_order2": (1, 2, 3, (4, 5), 3, 3, 2, 2, "strided", True),
    # D = 6 window states > MAX_SOURCES: the forward and the weight gradients run as
    # several launches carried in a float32 scratch.
    "lags6_mixed_layouts": (1, 2, 3, (4, 5), 3, 6, 1, 4, "mixed", True),
    # state 4 of 9 is in the windows of all 5 levels: its gradient sums 5 sources (two
    # launches); K = 1 keeps the 5-level chain cheap in the interpreter.
    "order5_k1": (1, 2, 2, (3, 4), 1, 9, 5, 7, "mixed", True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case):
    b, c, r, hw, k, m, n, head, layout, bias = CASES[case]
    chain = _chain(b, c, r, hw, k, m, n, torch.float32, layout, bias)
    grad = torch.randn(b, r, *hw)
    v_ref, g_ref = _run(ctt_chain_ref, chain, head, grad)
    v, g = _run(ctt_chain_triton, chain, head, grad)
    assert_close(v, v_ref, RTOL[torch.float32], "v")
    for i, (a, e) in enumerate(zip(g, g_ref)):
        assert_close(a, e, RTOL[torch.float32], f"grad {i}")


def test_float64_equals_reference_to_rounding():
    chain = _chain(2, 3, 3, (5, 7), 3, 4, 2, torch.float64, "mixed")
    grad = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    v_ref, g_ref = _run(ctt_chain_ref, chain, 3, grad)
    v, g = _run(ctt_chain_triton, chain, 3, grad)
    assert_close(v, v_ref, RTOL[torch.float64], "v")
    for i, (a, e) in enumerate(zip(g, g_ref)):
        assert_close(a, e, RTOL[torch.float64], f"grad {i}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_at_most_twice_eager(dtype):
    """CELLS.md: against a float64 reference, the kernels' error in bf16/fp16 is no worse
    than twice the eager reference's in the same dtype (outputs and every gradient)."""
    chain64 = _chain(2, 4, 8, (5, 7), 3, 4, 2, torch.float64, "channels_last")
    grad64 = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    truth = _run(ctt_chain_ref, chain64, 1, grad64)
    eager = _run(ctt_chain_ref, _as(chain64, dtype), 1, grad64.to(dtype))
    ours = _run(ctt_chain_triton, _as(chain64, dtype), 1, grad64.to(dtype))
    for i, (o, e, t) in enumerate(zip([ours[0], *ours[1]], [eager[0], *eager[1]],
                                      [truth[0], *truth[1]])):
        assert o.dtype == dtype and torch.isfinite(o).all(), f"output {i}"
        err, err_eager = rel_error(o, t), rel_error(e, t)
        assert err <= 2 * err_eager, f"output {i}: {err:.2e} > 2 x eager {err_eager:.2e}"


def test_gradcheck_float64():
    chain = _chain(1, 2, 2, (3, 4), 3, 3, 2, torch.float64, "channels_last")
    leaves = _leaves(chain)
    sizes = [len(group) for group in chain]

    def fn(*ts):
        groups, i = [], 0
        for size in sizes:
            groups.append(list(ts[i:i + size]))
            i += size
        return ctt_chain_triton(*groups, head=1)

    # fast mode: one random projection of the Jacobian per input (the interpreter runs
    # every forward evaluation of the numerical Jacobian).
    assert torch.autograd.gradcheck(fn, leaves, fast_mode=True)


@pytest.mark.parametrize("frozen", ["weights", "p_biases"])
def test_only_needed_gradients(frozen, monkeypatch):
    """States that need no gradient get none (their launches are skipped), nor do frozen
    weights; the others still equal the reference (eager Function and torch.library op)."""
    from fastcells.kernels import ctt
    launches = []
    for name in ("conv_sum", "weight_grads"):
        def counted(*args, _fn=getattr(ctt, name), _name=name, **kwargs):
            launches.append(_name)
            return _fn(*args, **kwargs)
        monkeypatch.setattr(ctt, name, counted)
    history, pw, pb, gw, gb = _chain(1, 2, 3, (3, 5), 3, 4, 2, torch.float64)
    for t in [history[0], history[3], *pb, *((*pw, *gw, *gb) if frozen == "weights" else ())]:
        t.requires_grad_(False)
    wanted = [t for t in (*history, *pw, *pb, *gw, *gb) if t.requires_grad]
    grad = torch.randn(1, 3, 3, 5, dtype=torch.float64)
    head = 2  # storage order differs from logical order
    ref = torch.autograd.grad(ctt_chain_ref(history, pw, pb, gw, gb, head=head), wanted, grad)
    outs = [ctt_chain_triton(history, pw, pb, gw, gb, head=head),
            torch.ops.fastcells.ctt_chain_triton(history, head, pw, pb, gw, gb)[-1]]
    for out in outs:
        launches.clear()
        got = torch.autograd.grad(out, wanted, grad)
        for a, e in zip(got, ref):
            assert_close(a, e, RTOL[torch.float64])
        # g_0 from g_1, then 2 of the 4 states; the weight gradients: one call per level
        weight_calls = 0 if frozen == "weights" else 2
        assert launches == ["conv_sum"] * 3 + ["weight_grads"] * weight_calls


def test_opcheck():
    history, pw, pb, gw, gb = _chain(1, 2, 3, (3, 4), 1, 3, 2, torch.float64, "mixed")
    ops = torch.ops.fastcells
    torch.library.opcheck(ops.ctt_chain_triton.default, (history, 1, pw, pb, gw, gb))
    vs = ops.ctt_chain_triton(history, 1, pw, pb, gw, gb)
    detached = [[t.detach() for t in group] for group in (history, vs[:-1], pw, gw)]
    torch.library.opcheck(ops.ctt_chain_triton_backward.default,
                          (torch.randn_like(vs[-1]), detached[0], 1, detached[1], detached[2],
                           detached[3], True, True, [True, False, True], True))


def test_bad_arguments():
    history, pw, pb, gw, gb = _chain(1, 2, 3, (3, 4), 3, 3, 2)
    with pytest.raises(ValueError, match="D = M - N"):
        ctt_chain_triton(history[:2], pw, pb, gw, gb)
    with pytest.raises(ValueError, match="g_weights"):
        ctt_chain_triton(history, pw, pb, [], gb)
    with pytest.raises(ValueError, match="p_biases"):
        ctt_chain_triton(history, pw, [pb[0], None], gw, gb)
    with pytest.raises(TypeError, match="every tensor"):
        ctt_chain_triton(history, [w.double() for w in pw], pb, gw, gb)


# ------------------------------------------------------------------------- cell and layer
@pytest.mark.parametrize("memory_efficient", [False, True], ids=["default", "memeff"])
def test_cell_matches_reference(memory_efficient):
    """ConvTTLSTMCell(backend="triton") over three steps from a random state (channels_last
    history): every state it returns, and the gradients of all of them."""
    ref, tri = make_cells("convttlstm_lags", [("reference", {}),
                                              ("triton", {"memory_efficient": memory_efficient})],
                          hidden=4, spatial=(5, 7))
    xs = [torch.randn(1, 3, 5, 7, requires_grad=True) for _ in range(3)]
    hist = tuple(torch.randn(1, 4, 5, 7).to(memory_format=torch.channels_last).requires_grad_()
                 for _ in range(ref.steps))
    c0 = torch.randn(1, 4, 5, 7, requires_grad=True)
    results = []
    for cell in (ref, tri):
        state, produced = (hist[-1], c0, hist), []
        for x in xs:
            state = cell(x, state)
            produced += [state[0], state[1]]
        assert len(state[2]) == cell.steps and state[2][-1] is state[0]
        weights = [torch.full_like(p, i + 1.0) for i, p in enumerate(produced)]
        grads = torch.autograd.grad(produced, [*xs, c0, *hist, *cell.parameters()], weights)
        results.append((produced, grads))
    for i, (a, e) in enumerate(zip(results[1][0], results[0][0])):
        assert_close(a, e, RTOL[torch.float32], f"state {i}")
    for i, (a, e) in enumerate(zip(results[1][1], results[0][1])):
        assert_close(a, e, RTOL[torch.float32], f"grad {i}")


@pytest.mark.parametrize("memory_efficient", [False, True], ids=["default", "memeff"])
def test_layer_matches_reference(memory_efficient):
    """The sequence layer (its history a ring buffer inside) over 3 steps, batch 1, odd
    size; the returned state continues the sequence."""
    def make(**kw):
        return fc.ConvTTLSTM(2, 3, order=2, steps=3, rank=3, kernel_size=3, **kw)

    ref = make(backend="reference")
    tri = make(backend="triton", memory_efficient=memory_efficient)
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 2, 5, 3, requires_grad=True)
    out_r, st_r = ref(x)
    out_t, st_t = tri(x)
    assert_close(out_t, out_r, RTOL[torch.float32], "output")
    h, c, history = st_t[0]
    assert isinstance(history, tuple) and len(history) == 3 and history[-1] is h
    for a, e in zip(history, st_r[0][2]):
        assert_close(a, e, RTOL[torch.float32], "history")
    more_r, _ = ref(x[:, :1], st_r)
    more_t, _ = tri(x[:, :1], st_t)
    assert_close(more_t, more_r, RTOL[torch.float32], "continued")
    g = torch.randn_like(out_r)
    gr = torch.autograd.grad((out_r * g).sum() + more_r.sum(), [x, *ref.parameters()])
    gt = torch.autograd.grad((out_t * g).sum() + more_t.sum(), [x, *tri.parameters()])
    for i, (a, e) in enumerate(zip(gt, gr)):
        assert_close(a, e, RTOL[torch.float32], f"grad {i}")


def test_cell_compiles_fullgraph():
    """torch.compile captures the Triton cell's step, forward and backward, without a graph
    break (in interpreter mode the CTT and gate ops are opaque custom ops whose fake
    implementations run the launchers without launching)."""
    torch._dynamo.reset()
    ref, tri = make_cells("convttlstm_lags", [("reference", {}), ("triton", {})], hidden=4,
                          spatial=(5, 7))
    x = torch.randn(1, 3, 5, 7, requires_grad=True)
    out_c = torch.compile(tri, fullgraph=True, backend="aot_eager")(x)[0]
    out_r = ref(x)[0]
    assert_close(out_c, out_r, RTOL[torch.float32])
    g_c = torch.autograd.grad(out_c.sum(), [x, *tri.parameters()])
    g_r = torch.autograd.grad(out_r.sum(), [x, *ref.parameters()])
    for i, (a, e) in enumerate(zip(g_c, g_r)):
        assert_close(a, e, RTOL[torch.float32], f"grad {i}")
