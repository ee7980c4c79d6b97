"""The summed convolution of the C++ backend (fastcells/ops/conv_sum.py): against its
reference for every algorithm setting, forward and every gradient, with row selections, odd
sizes, batch 1, channels_last and non-contiguous inputs, inputs without gradients, float64
gradcheck; what it keeps for backward; when it stacks; bad arguments; the ST-LSTM cell's
summed path against the reference cell."""
import pytest
import torch

import fastcells as fc
from fastcells.ops import conv as C
from fastcells.ops.conv_sum import conv2d_sum, conv2d_sum_ref, select_rows, stacks
from fastcells.utils.memory import saved_tensor_bytes

from .conftest import requires_cpp
from .helpers import RTOL, assert_close
from .test_conv_autotune import SETTINGS, _layout, _skip_unavailable


@pytest.fixture(autouse=True)
def _fresh_setting():
    saved = fc.get_conv_algorithm()
    fc.clear_conv_algorithm_cache()
    yield
    fc.set_conv_algorithm(**saved)
    fc.clear_conv_algorithm_cache()


# (B, (C1, C2, ...), Cout, H, W, k, padding, layout, rows)
CASES = [
    (2, (3, 4), 6, 9, 11, 3, 1, "contiguous", None),
    (1, (2, 5), 4, 7, 6, 5, 2, "channels_last", None),
    (2, (4, 3, 2), 5, 8, 9, 3, 1, "noncontiguous", None),
    (3, (3, 3), 4, 6, 7, 1, 0, "contiguous", None),
    # ST-LSTM's use: rows picked from a wider weight, and zero rows (-1)
    (2, (3, 4), 5, 9, 8, 5, 2, "contiguous", ((6, 0, 2, -1, 4), (4, -1, 0, 1, 2))),
    (1, (2, 2), 3, 5, 5, 3, (1, 0), "contiguous", (None, (-1, 2, 0))),
]


def _tensors(case, dtype=torch.float32, need=None):
    b, cins, cout, h, w, k, pad, layout, rows = case
    need = need or [True] * len(cins)
    xs = [_layout(torch.randn(b, c, h, w, dtype=dtype), layout).requires_grad_(n)
          for c, n in zip(cins, need)]
    rows = rows or [None] * len(cins)
    ws = [(torch.randn(cout if r is None else 7, c, k, k, dtype=dtype) / (c * k * k) ** 0.5)
          .requires_grad_() for c, r in zip(cins, rows)]
    bias = torch.randn(cout, dtype=dtype).requires_grad_()
    return xs, ws, bias, pad, (None if all(r is None for r in rows) else rows)


@pytest.mark.filterwarnings("ignore:fastcells conv2d:RuntimeWarning")  # rejections
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[:8])))
def test_matches_reference(setting, case):
    _skip_unavailable(SETTINGS[setting].values())
    fc.set_conv_algorithm(**SETTINGS[setting])
    xs, ws, bias, pad, rows = _tensors(case)
    for b in (bias, None):
        y = conv2d_sum(xs, ws, b, pad, rows)
        y_ref = conv2d_sum_ref(xs, ws, b, pad, rows)
        assert_close(y, y_ref, RTOL[torch.float32], "forward")
        g = torch.randn_like(y_ref)
        leaves = [*xs, *ws] + ([b] if b is not None else [])
        for i, (a, e) in enumerate(zip(torch.autograd.grad(y, leaves, g),
                                       torch.autograd.grad(y_ref, leaves, g))):
            assert_close(a, e, RTOL[torch.float32], f"grad of leaf {i}")
    if setting != "off":  # the concatenated convolution went through the dispatcher
        cins = sum(c for c in case[1])
        assert any(k.input[1] == cins for k in fc.conv_algorithm_cache()), \
            fc.conv_algorithm_cache().keys()


@pytest.mark.filterwarnings("ignore:fastcells conv2d:RuntimeWarning")  # rejections
@pytest.mark.parametrize("setting", ["winograd", "nnpack", "auto"])
def test_inputs_without_gradient(setting):
    """Only the inputs that need a data gradient get one (the first layer's frames do not);
    the data gradient's convolution covers only their channels."""
    _skip_unavailable(SETTINGS[setting].values())
    fc.set_conv_algorithm(**SETTINGS[setting])
    case = (2, (3, 4), 6, 9, 8, 3, 1, "contiguous", None)
    xs, ws, bias, pad, rows = _tensors(case, need=[False, True])
    y = conv2d_sum(xs, ws, bias, pad)
    y_ref = conv2d_sum_ref(xs, ws, bias, pad)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [xs[1], *ws, bias], g)
    want = torch.autograd.grad(y_ref, [xs[1], *ws, bias], g)
    for a, e in zip(got, want):
        assert_close(a, e, RTOL[torch.float32], "grad")
    keys = fc.conv_algorithm_cache()
    assert any(k.input == (2, 4, 9, 8) and any(p.startswith("input") for p in v)
               for k, v in keys.items()), keys.keys()


@pytest.mark.parametrize("setting", ["matmul", "onednn_in_dispatcher", "auto"])
def test_gradcheck_float64(setting):
    fc.set_conv_algorithm(**SETTINGS[setting])
    case = (2, (2, 1), 3, 4, 5, 3, 1, "contiguous", ((4, -1, 0), None))
    xs, ws, bias, pad, rows = _tensors(case, dtype=torch.float64)
    ws[1] = ws[1].detach()[:3].requires_grad_()
    assert torch.autograd.gradcheck(
        lambda *a: conv2d_sum(list(a[:2]), list(a[2:4]), a[4], pad, rows), (*xs, *ws, bias))
    assert fc.conv_algorithm_cache(), "the dispatcher did not run"


def test_keeps_no_concatenation_for_backward():
    """Saved for backward: the inputs themselves (which the caller holds anyway), never the
    concatenation nor the selected rows of the weights."""
    fc.set_conv_algorithm(**SETTINGS["nnpack"])
    xs, ws, bias, pad, rows = _tensors(CASES[4])
    x_bytes = sum(x.numel() * x.element_size() for x in xs)
    got = saved_tensor_bytes(lambda: conv2d_sum(xs, ws, bias, pad, rows), exclude=[*xs, *ws])
    assert got == 0
    cat = saved_tensor_bytes(lambda: C.conv2d(torch.cat(xs, 1), torch.cat(
        [select_rows(w, r) for w, r in zip(ws, rows)], 1), bias, pad), exclude=[*xs, *ws])
    assert cat >= x_bytes  # what conv2d of the concatenation keeps


def test_stacks_only_off_onednn(monkeypatch):
    case = (2, (3, 4), 6, 9, 8, 3, 1, "contiguous", None)
    xs, ws, bias, pad, rows = _tensors(case)
    fc.set_conv_algorithm("onednn")
    assert not stacks(xs, ws, pad)
    y = conv2d_sum(xs, ws, bias, pad)  # the dispatcher off: F.conv2d per input, added
    expected = torch.nn.functional.conv2d(xs[0], ws[0], bias, padding=pad)
    expected = expected.add_(torch.nn.functional.conv2d(xs[1], ws[1], padding=pad))
    assert torch.equal(y, expected)
    fc.set_conv_algorithm("auto")
    assert stacks(xs, ws, pad)  # nothing timed yet
    monkeypatch.setattr(C, "pick", lambda ms: "onednn")
    conv2d_sum(xs, ws, bias, pad).sum().backward()
    assert not stacks(xs, ws, pad)  # every pass chosen oneDNN: the convolutions one by one
    with torch.no_grad():
        assert not stacks(xs, ws, pad)


def test_bad_arguments():
    x, w = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3)
    with pytest.raises(TypeError, match="xs and weights: expected lists"):
        conv2d_sum(x, [w])
    with pytest.raises(ValueError, match="one weight per input"):
        conv2d_sum([x, x], [w])
    with pytest.raises(ValueError, match=r"xs\[1\]: expected \(B, Ci, H, W\)"):
        conv2d_sum([x, torch.randn(1, 2, 5, 6)], [w, w], None, 1)
    with pytest.raises(ValueError, match=r"weights\[1\]: expected \(3, Ci, 3, 3\)"):
        conv2d_sum([x, x], [w, torch.randn(4, 2, 3, 3)], None, 1)
    with pytest.raises(ValueError, match=r"rows\[0\]: expected distinct rows"):
        conv2d_sum([x], [w], None, 1, [(0, 0, 1)])
    with pytest.raises(ValueError, match=r"rows\[0\]: expected distinct rows"):
        conv2d_sum([x], [w], None, 1, [(0, 3, 1)])
    with pytest.raises(ValueError, match="rows: expected None or one entry per weight"):
        conv2d_sum([x], [w], None, 1, [None, None])
    with pytest.raises(ValueError, match=r"weights\[0\]: expected a 4-d tensor"):
        conv2d_sum([x], [torch.randn(3, 2)], None, 1)
    with pytest.raises(ValueError, match="padding"):
        conv2d_sum([x], [w], None, -1)


@requires_cpp
@pytest.mark.filterwarnings("ignore:fastcells conv2d:RuntimeWarning")  # the 1x1 conv_last
@pytest.mark.parametrize("setting", ["winograd", "nnpack", "off"])
@pytest.mark.parametrize("bias", [False, True])
def test_stlstm_summed_path_matches_reference(setting, bias):
    """ST-LSTM's two summed convolutions (the MK-LSTM gate layout with the forget bias in
    the biases) against the reference cell, every gradient, a forget bias that is not 1."""
    _skip_unavailable(SETTINGS[setting].values())
    fc.set_conv_algorithm(**SETTINGS[setting])
    torch.manual_seed(0)
    ref = fc.SpatioTemporalLSTMCell(3, 5, kernel_size=3, bias=bias, forget_bias=0.6,
                                    backend="reference")
    cpp = fc.SpatioTemporalLSTMCell(3, 5, kernel_size=3, bias=bias, forget_bias=0.6,
                                    backend="cpp")
    cpp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 9, 7, requires_grad=True)
    state = tuple(torch.randn(2, 5, 9, 7, requires_grad=True) for _ in range(3))
    out, out_ref = cpp(x, state), ref(x, state)
    leaves = [x, *state, *cpp.parameters()]
    leaves_ref = [x, *state, *ref.parameters()]
    gs = [torch.randn_like(o) for o in out]
    for a, e in zip(out, out_ref):
        assert_close(a, e, RTOL[torch.float32], "state")
    for a, e in zip(torch.autograd.grad(out, leaves, gs),
                    torch.autograd.grad(out_ref, leaves_ref, gs)):
        assert_close(a, e, RTOL[torch.float32], "grad")
    summed = {k for k in fc.conv_algorithm_cache() if k.input[1] == 3 + 5}
    assert (setting == "off") == (not summed)  # the summed path ran off oneDNN only
