"""The C++ backend's convolution entry point (fastcells/ops/conv.py): every algorithm of
every pass against F.conv2d, the autograd path in float64, the cache and the forced
choices, NNPACK missing / failing / wrong, and the cells with each algorithm forced."""
import os
import sys
import time
import warnings

import pytest
import torch
import torch.nn.functional as F

import fastcells as fc
from fastcells import _ext
from fastcells.ops import conv as C

from .conftest import requires_cpp
from .helpers import RTOL, assert_close, make_cells
from .test_cells import _leaves, _random_state, _run

NNPACK = C._nnpack_unavailable_reason() is None
requires_nnpack = pytest.mark.skipif(not NNPACK, reason="this torch build has no NNPACK")


def _skip_unavailable(algos):
    if "nnpack" in algos and not NNPACK:
        pytest.skip("this torch build has no NNPACK")
    if set(algos) & set(C.WINOGRAD_POINTS) and not _ext.cpp_available():
        pytest.skip("C++ extension not built")


@pytest.fixture(autouse=True)
def _fresh_setting():
    """Each test starts from 'auto' with an empty cache and leaves the setting as it was."""
    saved = fc.get_conv_algorithm()
    fc.clear_conv_algorithm_cache()
    fc.set_conv_algorithm("auto")
    yield
    fc.set_conv_algorithm(**saved)
    fc.clear_conv_algorithm_cache()


def _layout(t, layout):
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "noncontiguous":
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    return t


# (B, Cin, Cout, H, W, k, padding, layout): odd sizes, kernels 1/3/5/7, batch 1, 1-channel
# inputs, channels_last and non-contiguous inputs, "valid" and asymmetric padding.
CASES = [
    (2, 3, 5, 9, 11, 3, 1, "contiguous"),
    (1, 1, 7, 7, 5, 5, 2, "contiguous"),
    (3, 6, 4, 6, 9, 1, 0, "channels_last"),
    (2, 5, 3, 8, 7, 7, 3, "noncontiguous"),
    (1, 4, 6, 5, 6, 3, 0, "channels_last"),
    (2, 2, 3, 7, 8, 5, (2, 1), "contiguous"),
]
K5 = (2, 8, 12, 13, 11, 5, 2, "contiguous")
SETTINGS = {
    "nnpack": dict(forward="nnpack", input="nnpack", weight="matmul"),
    "matmul": dict(forward="matmul", input="matmul", weight="onednn"),
    "onednn_in_dispatcher": dict(forward="onednn", input="onednn", weight="matmul"),
    "auto": dict(forward="auto", input="auto", weight="auto"),
    "off": dict(forward="onednn", input="onednn", weight="onednn"),
    "winograd": dict(forward="winograd", input="winograd", weight="winograd"),
    "winograd8": dict(forward="winograd8", input="winograd8", weight="winograd8"),
    "mixed": dict(forward="matmul", input="nnpack", weight="winograd"),
}


def _case_tensors(case, dtype=torch.float32):
    b, cin, cout, h, w, k, pad, layout = case
    x = _layout(torch.randn(b, cin, h, w, dtype=dtype), layout).requires_grad_()
    weight = (torch.randn(cout, cin, k, k, dtype=dtype) / (cin * k * k) ** 0.5).requires_grad_()
    bias = torch.randn(cout, dtype=dtype).requires_grad_()
    return x, weight, bias, pad


def _ran(choice: dict, algo: str) -> bool:
    """A forced algorithm ran, or was rejected only for being more than VERIFY_FACTOR times as
    far off as oneDNN (NNPACK's 3x3 Winograd and the Winograd weight gradient on small inputs,
    tested in test_implementations_match_conv2d)."""
    return (choice["algorithm"] == algo
            or (algo in ("nnpack", *C.WINOGRAD_POINTS)
                and "disagrees" in choice["rejected"].get(algo, "")))


@pytest.mark.parametrize("algo", ["onednn", "nnpack", "matmul", "winograd", "winograd8"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_implementations_match_conv2d(algo, case):
    """Each algorithm of each pass on its own, against F.conv2d and its gradients (float32
    tolerance of CELLS.md; NNPACK's Winograd measured at 2-5e-6). Where an algorithm cannot
    take a case, the dispatcher's reason says so."""
    _skip_unavailable([algo])
    x, weight, bias, pad = _case_tensors(case)
    pad = C._padding(pad)
    y_ref = F.conv2d(x, weight, bias, padding=pad)
    g = _layout(torch.randn_like(y_ref), case[-1])
    gx, gw = torch.autograd.grad(y_ref, (x, weight), g)
    impl = C.IMPLEMENTATIONS
    why = C._not_applicable(algo, x, weight, pad, y_ref.shape[2:])
    if algo in C.WINOGRAD_POINTS and (case[5] not in (3, 5) or pad[0] != pad[1]):
        assert why and "3x3 and 5x5" in why
        return
    assert why is None
    with torch.no_grad():
        if algo in impl["forward"]:
            assert_close(impl["forward"][algo](x, weight, bias, pad), y_ref, RTOL[torch.float32])
            assert_close(impl["forward"][algo](x, weight, None, pad),
                         y_ref - bias.view(-1, 1, 1), RTOL[torch.float32])
            assert_close(impl["input"][algo](x.shape, weight, g, pad), gx, RTOL[torch.float32])
        if algo in impl["weight"]:
            assert_close(impl["weight"][algo](x, weight.shape, g, pad), gw, RTOL[torch.float32])


# (B, Cin, Cout, H, W): widths around the 8- and 4-tile vectors of the transforms (tiles per
# row at "same" padding 1, 2, 5, 9, 19, 8, 23 for F(2x2, 5x5); 1, 2, 4, 10, 4, 12 for
# F(4x4, 3x3) and F(4x4, 5x5), the last two on 4-tile vectors; 1, 2, 3, 7, 3, 8 for
# F(6x6, 3x3)), heights not a multiple of the tile, one pixel, one channel; the last one
# is wide enough (64 -> 72) and has tiles enough (2 x 9 x 10 at F(4x4, .)) for the default
# rule to split it into several chunks.
WINOGRAD_SHAPES = [(1, 1, 1, 1, 1), (2, 3, 5, 7, 9), (1, 4, 6, 13, 37), (3, 9, 2, 5, 4),
                   (2, 16, 3, 17, 23), (2, 5, 4, 9, 16), (1, 3, 2, 6, 45), (2, 64, 72, 33, 37)]


@requires_cpp
@pytest.mark.parametrize("chunk", [0, 1, 8], ids=["default_chunk", "chunk1", "chunk8"])
@pytest.mark.parametrize("pad", ["zero", "same", "full"])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("points", [6, 8])
@pytest.mark.parametrize("shape", WINOGRAD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_winograd_kernels_tile_edges(shape, points, k, pad, chunk):
    """The C++ Winograd kernels on their own, on both point sets: forward (with bias), data
    gradient and weight gradient against oneDNN, at widths and heights that leave partial
    tiles and partial 8- or 4-tile vectors, processed in one chunk or one tile row (or a few
    tiles) at a time. Outputs start NaN-poisoned (conftest), so an unwritten element
    fails."""
    b, cin, cout, h, w = shape
    p = {"zero": 0, "same": k // 2, "full": k - 1}[pad]
    ext = _ext.cpp_extension()
    x = torch.randn(b, cin, h, w)
    weight = torch.randn(cout, cin, k, k) / (cin * k * k) ** 0.5
    bias = torch.randn(cout)
    if h + 2 * p < k or w + 2 * p < k:
        with pytest.raises(RuntimeError, match="leaves no output"):
            ext.conv2d_winograd(x, weight, bias, p, chunk, points)
        return
    y_ref = F.conv2d(x, weight, bias, padding=p)
    assert_close(ext.conv2d_winograd(x, weight, bias, p, chunk, points), y_ref,
                 RTOL[torch.float32], "forward")
    g = torch.randn_like(y_ref)
    gx = torch.nn.grad.conv2d_input(x.shape, weight, g, padding=p)
    w_t = weight.flip(2, 3).transpose(0, 1).contiguous()
    assert_close(ext.conv2d_winograd(g, w_t, None, k - 1 - p, chunk, points), gx,
                 RTOL[torch.float32], "data gradient")
    gw = torch.nn.grad.conv2d_weight(x, weight.shape, g, padding=p)
    assert_close(ext.conv_weight_grad_winograd(x, g, k, p, chunk * 4096, points), gw,
                 RTOL[torch.float32], "weight gradient")


@requires_cpp
def test_winograd_kernels_reject_bad_arguments():
    ext = _ext.cpp_extension()
    x, w = torch.randn(1, 2, 8, 8), torch.randn(3, 2, 3, 3)
    with pytest.raises(RuntimeError, match="float32 only"):
        ext.conv2d_winograd(x.double(), w.double(), None, 1, 0, 6)
    with pytest.raises(RuntimeError, match="square kernel 3 or 5"):
        ext.conv2d_winograd(x, torch.randn(3, 2, 7, 7), None, 1, 0, 6)
    with pytest.raises(RuntimeError, match="x \\(B, C, H, W\\) and w"):
        ext.conv2d_winograd(x, torch.randn(3, 4, 3, 3), None, 1, 0, 6)
    with pytest.raises(RuntimeError, match="bias"):
        ext.conv2d_winograd(x, w, torch.randn(4), 1, 0, 6)
    with pytest.raises(RuntimeError, match="points 6 or 8, got 7"):
        ext.conv2d_winograd(x, w, None, 1, 0, 7)
    with pytest.raises(RuntimeError, match="points 6 or 8, got 4"):
        ext.conv_weight_grad_winograd(x, torch.randn(1, 3, 8, 8), 3, 1, 0, 4)


@pytest.mark.filterwarnings("ignore:fastcells conv2d:RuntimeWarning")  # rejections, see _ran
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_algorithm_matches_conv2d(setting, case):
    _skip_unavailable(SETTINGS[setting].values())
    x, weight, bias, pad = _case_tensors(case)
    fc.set_conv_algorithm(**SETTINGS[setting])
    for with_bias in (True, False):
        b = bias if with_bias else None
        y = C.conv2d(x, weight, b, pad)
        y_ref = F.conv2d(x, weight, b, padding=pad)
        assert_close(y, y_ref, RTOL[torch.float32], "forward")
        g = torch.randn_like(y_ref)
        leaves = [x, weight, bias] if with_bias else [x, weight]
        for name, a, e in zip(("x", "weight", "bias"), torch.autograd.grad(y, leaves, g),
                              torch.autograd.grad(y_ref, leaves, g)):
            assert_close(a, e, RTOL[torch.float32], f"grad {name}")
    # A forced algorithm actually ran, or says why it could not.
    if setting not in ("auto", "off"):
        (choices,) = fc.conv_algorithm_cache().values()
        for pass_, algo in SETTINGS[setting].items():
            if algo == "onednn":
                continue
            choice = choices[f"{pass_}[{algo}]"]
            why = C._not_applicable(algo, x, weight, C._padding(pad), y.shape[2:])
            if why:
                assert choice["algorithm"] == "onednn" and choice["rejected"][algo] == why
            else:
                assert _ran(choice, algo), choices
    if setting == "off":
        assert fc.conv_algorithm_cache() == {}  # plain F.conv2d: no dispatcher at all


@pytest.mark.parametrize("setting", ["matmul", "onednn_in_dispatcher", "auto"])
def test_gradcheck_float64(setting):
    fc.set_conv_algorithm(**SETTINGS[setting])
    x = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: C.conv2d(*a, 1), (x, w, b))
    w5 = torch.randn(1, 2, 5, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: C.conv2d(x, w, None, (1, 0)), (x, w5))
    assert fc.conv_algorithm_cache(), "the dispatcher did not run"


def test_float64_never_nnpack():
    x, w, b, pad = _case_tensors(CASES[0], torch.float64)
    with pytest.warns(RuntimeWarning, match="float32 only"):
        with fc.conv_algorithm(forward="nnpack"):
            y = C.conv2d(x, w, b, pad)
    assert_close(y, F.conv2d(x, w, b, padding=pad), RTOL[torch.float64])
    (choices,) = fc.conv_algorithm_cache().values()
    assert choices["forward[nnpack]"]["algorithm"] == "onednn"
    assert "float32 only" in choices["forward[nnpack]"]["rejected"]["nnpack"]


def _wrap_implementations(monkeypatch, before, algos=None):
    """Every implementation (of ``algos``, default all) calls ``before(pass_, algo)`` first."""
    for pass_, impls in C.IMPLEMENTATIONS.items():
        for algo, fn in list(impls.items()):
            if algos is None or algo in algos:
                def wrapped(*args, _fn=fn, _k=(pass_, algo)):
                    before(*_k)
                    return _fn(*args)
                monkeypatch.setitem(impls, algo, wrapped)


def _spy(monkeypatch):
    """Counts the calls of every implementation."""
    calls = {}
    _wrap_implementations(monkeypatch, lambda *k: calls.__setitem__(k, calls.get(k, 0) + 1))
    return calls


def test_one_timing_per_shape(monkeypatch):
    x, w, b, pad = _case_tensors(CASES[0])  # few channels: matmul is timed too
    for _ in range(3):
        C.conv2d(x, w, b, pad).sum().backward()
    # forward, input and weight: each timed once, on the first call
    assert C.stats["timings"] == 3
    (key, choices), = fc.conv_algorithm_cache().items()
    assert key.input == tuple(x.shape) and key.layout == "contiguous"
    assert key.threads == torch.get_num_threads()
    for pass_ in C.PASSES:
        choice = choices[pass_]
        assert choice["algorithm"] in choice["ms"] and set(choice["ms"]) <= set(C.ALGORITHMS[pass_])
        assert choice["algorithm"] == C.pick(choice["ms"])
    # the cached choice runs, and only it, from then on (where all three are oneDNN the call
    # is F.conv2d itself, not seen by the spy)
    calls = _spy(monkeypatch)
    C.conv2d(x, w, b, pad).sum().backward()
    if all(choices[p]["algorithm"] == "onednn" for p in C.PASSES):
        assert calls == {}
    else:
        assert sorted(calls) == sorted((p, choices[p]["algorithm"]) for p in C.PASSES)
    assert C.stats["timings"] == 3
    # another layout is another key
    C.conv2d(x.contiguous(memory_format=torch.channels_last).detach(), w, b, pad)
    assert C.stats["timings"] == 4 and len(fc.conv_algorithm_cache()) == 2


def test_pick_prefers_onednn_in_a_near_tie():
    assert C.pick({"onednn": 10.0, "nnpack": 9.5}) == "onednn"  # within the margin
    assert C.pick({"onednn": 10.0, "nnpack": 8.9}) == "nnpack"
    assert C.pick({"onednn": 10.0, "nnpack": 12.0, "matmul": 11.0}) == "onednn"
    assert C.pick({"nnpack": 3.0, "matmul": 2.0}) == "matmul"  # no oneDNN timed: fastest
    # oneDNN under AUTO_MIN_MS keeps the key, however much faster another candidate is
    assert C.pick({"onednn": 0.9 * C.AUTO_MIN_MS, "winograd": 0.1}) == "onednn"
    assert C.pick({"onednn": C.AUTO_MIN_MS, "winograd": 0.1}) == "winograd"


def test_cache_says_why_auto_kept_onednn(monkeypatch):
    """A faster candidate that auto did not take is explained, by margin or by floor."""
    assert "AUTO_MARGIN" in C.kept_onednn({"onednn": 10.0, "nnpack": 9.5})
    assert "AUTO_MIN_MS" in C.kept_onednn({"onednn": 0.5 * C.AUTO_MIN_MS, "winograd": 0.1})
    assert C.kept_onednn({"onednn": 10.0, "nnpack": 8.0}) == ""  # nnpack taken
    assert C.kept_onednn({"onednn": 1.0, "nnpack": 8.0}) == ""  # oneDNN the fastest
    # through the dispatcher: oneDNN made the slowest, the floor raised past it
    onednn = C.IMPLEMENTATIONS["forward"]["onednn"]

    def slow_onednn(*args):
        time.sleep(0.02)
        return onednn(*args)

    monkeypatch.setitem(C.IMPLEMENTATIONS["forward"], "onednn", slow_onednn)
    monkeypatch.setattr(C, "AUTO_MIN_MS", 1e9)
    x, w = torch.randn(2, 8, 12, 12), torch.randn(16, 8, 3, 3)
    C.conv2d(x, w, None, 1)
    (choices,) = fc.conv_algorithm_cache().values()
    c = choices["forward"]
    assert c["algorithm"] == "onednn" and min(c["ms"], key=c["ms"].get) != "onednn", c
    assert "AUTO_MIN_MS" in c["kept"], c


def _slowed(monkeypatch, seconds=0.02):
    """Every non-oneDNN implementation made slower than oneDNN (it sleeps first)."""
    others = {a for algos in C.ALGORITHMS.values() for a in algos} - {"onednn"}
    _wrap_implementations(monkeypatch, lambda *_: time.sleep(seconds), others)


def test_all_onednn_keys_run_plain_conv2d(monkeypatch):
    """Where auto chose oneDNN for every pass a call needs, the call is F.conv2d itself: no
    autograd.Function (eager's cost), same values and gradients; inference needs only the
    forward's choice."""
    _slowed(monkeypatch)
    x, w, b, pad = _case_tensors(CASES[0])
    x.requires_grad_()
    C.conv2d(x, w, b, pad).sum().backward()  # first call: times and chooses every pass
    assert all(c["algorithm"] == "onednn"
               for c in fc.conv_algorithm_cache()[next(iter(fc.conv_algorithm_cache()))]
               .values())
    applied = []
    monkeypatch.setattr(C._Conv2d, "apply", lambda *a: applied.append(a))
    y = C.conv2d(x, w, b, pad)
    assert applied == [] and y.grad_fn.name() == F.conv2d(x, w, b, padding=pad).grad_fn.name()
    got = torch.autograd.grad(y.sum(), (x, w, b))
    want = torch.autograd.grad(F.conv2d(x, w, b, padding=pad).sum(), (x, w, b))
    for a, e in zip(got, want):
        assert torch.equal(a, e)
    with torch.no_grad():
        assert torch.equal(C.conv2d(x, w, b, pad), F.conv2d(x, w, b, padding=pad))
    # a key whose input pass was never chosen (x needed no gradient) is not bypassed for a
    # call that needs it before that pass is chosen
    x2 = torch.randn(1, *x.shape[1:])
    with torch.no_grad():
        C.conv2d(x2, w, b, pad)  # forward chosen only
    C.conv2d(x2.requires_grad_(), w, b, pad)
    assert len(applied) == 1


def test_forced_choice_is_obeyed(monkeypatch):
    calls = _spy(monkeypatch)
    x, w, b, pad = _case_tensors(CASES[0])
    fc.set_conv_algorithm("matmul")
    for _ in range(2):
        C.conv2d(x, w, b, pad).sum().backward()
    assert C.stats["timings"] == 0
    # matmul every call, and once per pass for its check against oneDNN on random inputs
    # (oneDNN in float32 and float64)
    assert calls == {**{(p, "matmul"): 3 for p in C.PASSES}, **{(p, "onednn"): 2 for p in C.PASSES}}
    with fc.conv_algorithm("onednn"):
        C.conv2d(x, w, b, pad).sum().backward()  # the dispatcher is off: plain F.conv2d
    assert calls[("forward", "onednn")] == 2
    assert fc.get_conv_algorithm() == {p: "matmul" for p in C.PASSES}


def test_setting_api(monkeypatch):
    fc.set_conv_algorithm("onednn", weight="matmul")
    assert fc.get_conv_algorithm() == {"forward": "onednn", "input": "onednn", "weight": "matmul"}
    fc.set_conv_algorithm(forward="nnpack")
    assert fc.get_conv_algorithm()["forward"] == "nnpack"
    with pytest.raises(ValueError, match="not an algorithm of every pass"):
        fc.set_conv_algorithm("nnpack")  # NNPACK has no weight gradient
    with pytest.raises(ValueError, match="weight='nnpack'"):
        fc.set_conv_algorithm(weight="nnpack")
    with pytest.raises(ValueError, match="unknown pass"):
        C._parse("backward=onednn")
    with pytest.raises(TypeError):
        fc.set_conv_algorithm(3)
    assert fc.get_conv_algorithm()["forward"] == "nnpack"  # failed calls change nothing
    monkeypatch.setenv(C.ENV_VAR, "forward=nnpack, input=matmul")
    assert C._from_env() == {"forward": "nnpack", "input": "matmul", "weight": "auto"}
    monkeypatch.delenv(C.ENV_VAR)
    assert C._from_env() == {p: "auto" for p in C.PASSES}  # the default
    monkeypatch.setenv(C.ENV_VAR, "onednn")
    assert C._from_env() == {p: "onednn" for p in C.PASSES}
    monkeypatch.setenv(C.ENV_VAR, "fastest")
    with pytest.raises(ValueError, match=C.ENV_VAR):
        C._from_env()


def test_bad_arguments():
    x, w, b, _ = _case_tensors(CASES[0])
    with pytest.raises(ValueError, match="padding"):
        C.conv2d(x, w, b, -1)
    with pytest.raises(ValueError, match="weight"):
        C.conv2d(x, w[:, :2], b, 1)
    with pytest.raises(ValueError, match="bias"):
        C.conv2d(x, w, b[:2], 1)
    with pytest.raises(TypeError, match="dtype"):
        C.conv2d(x, w.double(), None, 1)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        C.conv2d(x[:, :, :2], w, b, 0)


@pytest.mark.parametrize("setting", ["auto", "forced"])
def test_nnpack_unavailable(monkeypatch, setting):
    monkeypatch.setattr(C, "_nnpack_unavailable_reason", lambda: "no NNPACK in this test")
    x, w, b, pad = _case_tensors(CASES[0])
    fc.set_conv_algorithm(**(dict(forward="nnpack", input="nnpack") if setting == "forced"
                             else {}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = C.conv2d(x, w, b, pad)
        y.backward(torch.ones_like(y))
    assert (len([c for c in caught if "no NNPACK" in str(c.message)]) == 2) == (setting == "forced")
    assert_close(y, F.conv2d(x, w, b, padding=pad), RTOL[torch.float32])
    (choices,) = fc.conv_algorithm_cache().values()
    for pass_ in ("forward", "input"):
        choice = choices[pass_ if setting == "auto" else f"{pass_}[nnpack]"]
        assert choice["algorithm"] != "nnpack"
        assert choice["rejected"]["nnpack"] == "no NNPACK in this test"


def _break_nnpack(monkeypatch, forward):
    monkeypatch.setitem(C.IMPLEMENTATIONS["forward"], "nnpack", forward)


@requires_nnpack
@pytest.mark.parametrize("failure", ["raises", "wrong", "nan"])
@pytest.mark.parametrize("setting", ["auto", "forced"])
def test_nnpack_failing_falls_back_to_onednn(monkeypatch, failure, setting):
    def broken(x, weight, bias, pad):
        if failure == "raises":
            raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")
        y = C._forward_nnpack(x, weight, bias, pad)
        return y * 1.001 if failure == "wrong" else y.fill_(float("nan"))

    _break_nnpack(monkeypatch, broken)
    fc.set_conv_algorithm(forward="nnpack" if setting == "forced" else "auto")
    x, w, b, pad = _case_tensors(CASES[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if setting == "forced" else "error")
        for _ in range(2):
            assert_close(C.conv2d(x, w, b, pad), F.conv2d(x, w, b, padding=pad),
                         RTOL[torch.float32])
    (choices,) = fc.conv_algorithm_cache().values()
    choice = choices["forward" if setting == "auto" else "forward[nnpack]"]
    assert choice["algorithm"] != "nnpack"
    expect = {"raises": "SpatialConvolution_updateOutput failed", "wrong": "disagrees",
              "nan": "disagrees"}[failure]
    assert expect in choice["rejected"]["nnpack"]


@requires_nnpack
def test_nnpack_failing_after_it_was_chosen(monkeypatch):
    x, w, b, pad = _case_tensors(K5)  # 5x5: NNPACK's FFT, accepted
    fc.set_conv_algorithm(forward="nnpack")
    C.conv2d(x, w, b, pad)

    def broken(*args):
        raise RuntimeError("NNPACK out of memory")

    _break_nnpack(monkeypatch, broken)
    with pytest.warns(RuntimeWarning, match="NNPACK out of memory"):
        y = C.conv2d(x, w, b, pad)
    assert_close(y, F.conv2d(x, w, b, padding=pad), RTOL[torch.float32])
    (choices,) = fc.conv_algorithm_cache().values()
    assert choices["forward[nnpack]"]["algorithm"] == "onednn"
    assert "out of memory" in choices["forward[nnpack]"]["rejected"]["nnpack"]


@pytest.mark.parametrize("setting", ["nnpack", "matmul", "onednn_in_dispatcher", "winograd",
                                     "winograd8"])
def test_deterministic_for_a_fixed_choice(setting, monkeypatch):
    _skip_unavailable(SETTINGS[setting].values())
    monkeypatch.setattr(C, "VERIFY_FACTOR", 1e3)  # the Winograd weight gradient at this size
    fc.set_conv_algorithm(**SETTINGS[setting])
    x, w, b, pad = _case_tensors(K5)
    runs = []
    for _ in range(2):
        y = C.conv2d(x, w, b, pad)
        runs.append([y, *torch.autograd.grad(y, (x, w, b), torch.ones_like(y))])
    for a, e in zip(*runs):
        assert torch.equal(a, e)
    (choices,) = fc.conv_algorithm_cache().values()
    assert all(c["algorithm"] == c["setting"] for p, c in choices.items() if "onednn" not in p)


def test_compile_traces_plain_conv2d():
    x, w, b, pad = _case_tensors(CASES[0])
    fn = torch.compile(lambda x, w, b: C.conv2d(x, w, b, pad), fullgraph=True,
                       backend="aot_eager")
    y = fn(x, w, b)
    y_ref = F.conv2d(x, w, b, padding=pad)
    assert_close(y, y_ref, 1e-6)
    g = torch.randn_like(y)
    for a, e in zip(torch.autograd.grad(y, (x, w, b), g), torch.autograd.grad(y_ref, (x, w, b), g)):
        assert_close(a, e, 1e-6)
    assert fc.conv_algorithm_cache() == {}  # nothing timed inside the trace


# ----------------------------------------------------------------------------- the cells
CELL_SETTINGS = ["nnpack", "matmul", "winograd", "winograd8", "auto"]


@requires_cpp
@pytest.mark.filterwarnings("ignore:fastcells conv2d:RuntimeWarning")  # rejections, see _ran
@pytest.mark.parametrize("setting", CELL_SETTINGS)
@pytest.mark.parametrize("config", ["convlstm_peephole", "stlstm_bias_ln", "mklstm",
                                    "convttlstm"])
def test_cells_with_each_algorithm(setting, config, monkeypatch):
    """Every convolution of a cpp cell step (and of its memory-efficient twin) runs the
    forced algorithm; outputs and gradients stay within the float32 tolerance. (Kernel 5
    where the configurations allow: NNPACK's 3x3 Winograd is rejected at these sizes. The
    Winograd weight gradient is let through its check, which rejects it at these sizes.)"""
    _skip_unavailable(SETTINGS[setting].values())
    if setting in C.WINOGRAD_POINTS:
        monkeypatch.setattr(C, "VERIFY_FACTOR", 1e3)
    fc.set_conv_algorithm(**SETTINGS[setting])
    b, h, w = 2, 7, 6
    ref, cpp, eff = make_cells(config, [("reference", {}), ("cpp", {}),
                                        ("cpp", {"memory_efficient": True})], spatial=(h, w))
    xs = [torch.randn(b, 3, h, w).requires_grad_() for _ in range(2)]
    init = _random_state(ref, b, h, w, torch.float32, "channels_last")
    results = []
    for cell in (ref, cpp, eff):
        out = _run(cell, xs, init)
        weights = [torch.ones_like(o) * (i + 1) for i, o in enumerate(out)]
        results.append((out, torch.autograd.grad(out, [*xs, *_leaves(init), *cell.parameters()],
                                                 weights, allow_unused=True)))
    for out, grads in results[1:]:
        for i, (a, e) in enumerate(zip(out, results[0][0])):
            assert_close(a, e, RTOL[torch.float32], f"output {i}")
        for i, (a, e) in enumerate(zip(grads, results[0][1])):
            assert (a is None) == (e is None)
            if e is not None:
                assert_close(a, e, RTOL[torch.float32], f"grad {i}")
    choices = [(p.split("[")[0], c) for cs in fc.conv_algorithm_cache().values()
               for p, c in cs.items()]
    if setting == "auto":
        assert choices and all(c["setting"] == "auto" for _, c in choices)
        return
    for pass_, algo in SETTINGS[setting].items():
        if algo == "onednn":  # not dispatched: plain oneDNN, no cache entry
            assert not any(p == pass_ for p, _ in choices)
            continue
        mine = [c for p, c in choices if p == pass_]
        assert mine and all(_ran(c, algo) or "3x3 and 5x5" in c["rejected"].get(algo, "")
                            for c in mine), mine
        assert any(c["algorithm"] == algo for c in mine), mine


@requires_cpp
@pytest.mark.parametrize("layer", ["ConvLSTM", "MKLSTM"])
def test_layer_batched_projection_goes_through_the_dispatcher(layer):
    fc.set_conv_algorithm("matmul")
    kwargs = {"batch_first": True}
    ref = getattr(fc, layer)(2, 4, num_layers=2, backend="reference", **kwargs)
    cpp = getattr(fc, layer)(2, 4, num_layers=2, backend="cpp", batch_input_projection=True,
                             **kwargs)
    cpp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 2, 5, 7, requires_grad=True)
    (y_ref, _), (y, _) = ref(x), cpp(x)
    assert_close(y, y_ref, RTOL[torch.float32])
    g = torch.randn_like(y)
    for a, e in zip(torch.autograd.grad(y, [x, *cpp.parameters()], g),
                    torch.autograd.grad(y_ref, [x, *ref.parameters()], g)):
        assert_close(a, e, RTOL[torch.float32])
    # the (B*T)-frame input projection is one of the keys
    assert any(k.input[0] == 6 for k in fc.conv_algorithm_cache())


# ----------------------------------------------------------------------------- routing
def _direct_conv2d_calls(fn) -> list[str]:
    """Run ``fn`` (forward and backward) and list the fastcells files, other than the
    dispatcher itself, from which ``F.conv2d`` was called (directly, or through an
    ``nn.Conv2d``): on the cpp backend every convolution must go through the dispatcher."""
    root = os.path.dirname(os.path.abspath(fc.__file__))
    torch_root = os.path.dirname(os.path.abspath(torch.__file__))
    allowed = os.path.join(root, "ops", "conv.py")
    real, callers = F.conv2d, []

    def spy(*args, **kwargs):
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith(torch_root):
            frame = frame.f_back  # nn.Conv2d.forward and the like: who called them
        if frame is not None:
            path = os.path.abspath(frame.f_code.co_filename)
            if path.startswith(root) and path != allowed:
                callers.append(f"{os.path.relpath(path, root)}:{frame.f_lineno}")
        return real(*args, **kwargs)

    F.conv2d = spy
    try:
        fn()
    finally:
        F.conv2d = real
    return callers


def _cell_step(name, memory_efficient):
    """One step forward and backward of a cpp cell (its memory-efficient twin recomputes its
    convolutions in backward)."""
    b, cin, hidden, size = 2, 3, 4, (7, 6)
    kw = {"memory_efficient": memory_efficient}
    if name in CELL_NAMES:
        cell = make_cells(name, [("cpp", kw)], cin=cin, hidden=hidden, spatial=size)[0]
        args = (torch.randn(b, cin, *size, requires_grad=True),)
    elif name == "ghu":
        cell = fc.GradientHighwayUnit(hidden, hidden, backend="cpp", **kw)
        args = (torch.randn(b, hidden, *size, requires_grad=True),
                torch.randn(b, hidden, *size, requires_grad=True))
    elif name == "mim_block":
        cell = fc.MIMBlock(cin, hidden, spatial_size=size, backend="cpp", **kw)
        args = (torch.randn(b, cin, *size, requires_grad=True),
                torch.randn(b, hidden, *size, requires_grad=True))
    elif name == "mimn":
        cell = fc.MIMNCell(cin, hidden, spatial_size=size, backend="cpp", **kw)
        args = (torch.randn(b, cin, *size, requires_grad=True),)
    else:  # MS-RNN's MIM cell, not the first layer (the T-gated memory)
        cell = fc.MIMCell(cin, hidden, backend="cpp", **kw)
        args = (torch.randn(b, cin, *size, requires_grad=True),
                torch.randn(b, cin, *size, requires_grad=True))

    def run():
        out = cell(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        loss = sum(o.float().sum() for o in out if torch.is_tensor(o))
        loss.backward()
    return run


CELL_NAMES = ["convlstm_peephole", "stlstm_bias_ln", "mklstm", "convttlstm", "causal_lstm",
              "causal_lstm_bias_ln", "split_convlstm_bias_ln"]


@requires_cpp
@pytest.mark.parametrize("memory_efficient", [False, True], ids=["plain", "memory_efficient"])
@pytest.mark.parametrize("name", CELL_NAMES + ["ghu", "mim_block", "mimn", "mimcell"])
def test_every_cell_convolution_goes_through_the_dispatcher(name, memory_efficient):
    fc.set_conv_algorithm("matmul")  # any non-oneDNN setting engages the dispatcher
    assert _direct_conv2d_calls(_cell_step(name, memory_efficient)) == []
    assert fc.conv_algorithm_cache(), "the dispatcher saw no convolution"


@requires_cpp
@pytest.mark.parametrize("layer", ["ConvLSTM", "SpatioTemporalLSTM", "MKLSTM", "ConvTTLSTM",
                                   "CausalLSTM", "MIM"])
def test_every_layer_convolution_goes_through_the_dispatcher(layer):
    fc.set_conv_algorithm("matmul")
    if layer == "MIM":  # ST-LSTM, then MIM blocks with their MIMN modules
        module = fc.MIM(3, 4, (7, 6), num_layers=3, backend="cpp")
    else:
        module = getattr(fc, layer)(3, 4, num_layers=2, backend="cpp",
                                    batch_input_projection=True)
    x = torch.randn(2, 3, 3, 7, 6, requires_grad=True)

    def run():
        out, _ = module(x)
        out.sum().backward()
    assert _direct_conv2d_calls(run) == []


@requires_cpp
def test_patched_msrnn_predrnnpp_goes_through_the_dispatcher():
    """The MS-RNN PredRNN++ drop-in computes its own convolutions (its weights stay in
    MS-RNN's layout)."""
    from .public import msrnn_predrnnpp as public
    fc.set_conv_algorithm("matmul")
    model = public.PredRNN_Plus2(3, 4, (2, 7, 6), 2, 3)
    fc.patch(model, backend="cpp")
    x = torch.randn(2, 3, 3, 7, 6, requires_grad=True)
    assert _direct_conv2d_calls(lambda: model(x).sum().backward()) == []


def test_direct_conv2d_calls_are_seen():
    """The check above can fail: the reference backend calls F.conv2d from fastcells files
    (cells/_conv.py's non-cpp branch, the reference ConvLSTM step), and a user's nn.Conv2d
    called from a fastcells file is traced to that file."""
    from fastcells.cells._conv import conv
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    assert _direct_conv2d_calls(lambda: conv("reference", x, w, None, 1))[0].startswith(
        "cells/_conv.py:")
    cell = make_cells("convlstm", [("reference", {})])[0]
    calls = _direct_conv2d_calls(lambda: cell(torch.randn(1, 3, 9, 11))[0].sum().backward())
    assert calls and all(c.startswith("cells/convlstm.py:") for c in calls), calls
