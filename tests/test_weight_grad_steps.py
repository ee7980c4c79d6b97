"""Several steps' weight gradients in one Winograd call (fastcells/ops/weight_grad_steps.py):
the summed C++ kernel against oneDNN, recurrent loops of ``conv2d`` and ``conv2d_sum`` (with
picked rows) at every grouping against per-step gradients and a float64 reference, and the
cases it must leave alone (``torch.autograd.grad``, ``backward(inputs=...)``, weights
computed from parameters)."""
import pytest
import torch
import torch.nn.functional as F

import fastcells as fc
from fastcells import _ext
from fastcells.ops import conv2d, conv2d_sum
from fastcells.ops import weight_grad_steps as S

from .conftest import requires_cpp
from .helpers import RTOL, assert_close

pytestmark = requires_cpp


@pytest.fixture(autouse=True)
def _fresh_setting():
    """Each test starts with Winograd forced for every pass and an empty cache, and leaves
    the settings as they were."""
    saved, saved_steps = fc.get_conv_algorithm(), S.get_weight_grad_steps()
    fc.clear_conv_algorithm_cache()
    fc.set_conv_algorithm("winograd8")
    S.stats.update(calls=0, pairs=0, peak_kept_bytes=0)
    yield
    fc.set_conv_algorithm(**saved)
    S.set_weight_grad_steps(saved_steps)
    fc.clear_conv_algorithm_cache()
    assert not S._pending, "pairs left kept after a backward pass"


@pytest.mark.parametrize("points", [6, 8])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("pairs", [1, 2, 3])
@pytest.mark.parametrize("chunk", [0, 1], ids=["default_chunk", "chunk1"])
def test_summed_kernel_matches_onednn(pairs, k, points, chunk):
    """``conv_weight_grad_winograd_sum`` over several (x, dz) pairs of one odd shape is the
    sum of their oneDNN weight gradients; NaN-poisoned output (conftest)."""
    ext = _ext.cpp_extension()
    b, cin, cout, h, w, p = 2, 5, 7, 13, 11, k // 2
    xs = [torch.randn(b, cin, h, w) for _ in range(pairs)]
    dzs = [torch.randn(b, cout, h, w) for _ in range(pairs)]
    want = sum(torch.nn.grad.conv2d_weight(x.double(), (cout, cin, k, k), g.double(),
                                           padding=p) for x, g in zip(xs, dzs))
    got = ext.conv_weight_grad_winograd_sum(xs, dzs, k, p, chunk * 4096, points)
    assert_close(got, want.float(), RTOL[torch.float32], "summed weight gradient")


def test_summed_kernel_rejects_bad_pairs():
    ext = _ext.cpp_extension()
    x, g = torch.randn(1, 2, 8, 8), torch.randn(1, 3, 8, 8)
    with pytest.raises(RuntimeError, match="one dz per x"):
        ext.conv_weight_grad_winograd_sum([x, x], [g], 3, 1, 0, 6)
    with pytest.raises(RuntimeError, match="one dz per x"):
        ext.conv_weight_grad_winograd_sum([], [], 3, 1, 0, 6)
    with pytest.raises(RuntimeError, match="pair 1 has other shapes"):
        ext.conv_weight_grad_winograd_sum([x, torch.randn(1, 2, 9, 8)], [g, g], 3, 1, 0, 6)


def test_setting_validates():
    for bad in (0, -1, 1.5, True, "x"):
        with pytest.raises(ValueError, match="steps: expected a whole number"):
            S.set_weight_grad_steps(bad)
    S.set_weight_grad_steps(3)
    assert S.get_weight_grad_steps() == 3
    assert fc.get_weight_grad_steps() == 3


def test_environment_variable_is_checked(monkeypatch):
    monkeypatch.setenv(S.ENV_VAR, "4")
    assert S._from_env() == 4
    monkeypatch.setenv(S.ENV_VAR, "zero")
    with pytest.raises(ValueError, match=f"environment variable {S.ENV_VAR}"):
        S._from_env()


T = 5


def _params(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    def mk(*shape):  # fan-in scaled, so that the loop neither saturates nor blows up
        fan_in = shape[1] * shape[2] * shape[3] if len(shape) == 4 else 1
        t = torch.randn(*shape, generator=g, dtype=dtype) / fan_in ** 0.5
        return t.requires_grad_()

    return {"w": mk(16, 3 + 8, 5, 5), "wh": mk(8, 8, 3, 3), "wx": mk(16, 3, 5, 5),
            "bias": mk(16)}


def _frames(dtype=torch.float32):
    g = torch.Generator().manual_seed(2)
    return [torch.randn(2, 3, 13, 11, generator=g, dtype=dtype) for _ in range(T)]


def _loop(p, frames, conv=conv2d, conv_sum=conv2d_sum):
    """A recurrent loop using each kind of weight input: slices of one parameter in a summed
    convolution, a parameter with picked rows, and a plain convolution of a parameter."""
    h = torch.zeros(frames[0].shape[0], 8, *frames[0].shape[2:], dtype=frames[0].dtype)
    rows = [list(range(8)) + [-1] * 8, None]
    for x in frames:
        z = conv_sum([x, h], [p["w"][:, :3], p["w"][:, 3:]], p["bias"], 2)
        z = z + conv_sum([x, h], [p["wx"], p["w"][:, 3:]], None, 2, rows)
        hh = conv(h, p["wh"], None, 1)
        h = torch.tanh(z[:, :8] + hh) * torch.sigmoid(z[:, 8:])
    return (h * h).sum()


def _ref_conv(x, weight, bias=None, padding=0):
    return F.conv2d(x, weight, bias, padding=padding)


def _ref_sum(xs, weights, bias=None, padding=0, rows=None):
    return fc.ops.conv2d_sum_ref(xs, weights, bias, padding, rows)


def _grads(p):
    return {k: v.grad.clone() for k, v in p.items()}


@pytest.mark.parametrize("steps", [1, 2, 3, T, 100])
def test_recurrent_loop_gradients(steps):
    """Every grouping gives the per-step gradients (to float32 rounding) and the float64
    reference's; the summed calls cover every step of every convolution."""
    frames = _frames()
    p64 = {k: v.detach().double().requires_grad_() for k, v in _params().items()}
    _loop(p64, [f.double() for f in frames], _ref_conv, _ref_sum).backward()
    p = _params()
    S.set_weight_grad_steps(steps)
    _loop(p, frames).backward()
    for k in p:
        assert_close(p[k].grad, p64[k].grad.float(), RTOL[torch.float32], k)
    groups = -(-T // steps)  # per convolution: 3 convolutions of weights
    assert (S.stats["calls"], S.stats["pairs"]) == ((0, 0) if steps == 1 else (3 * groups, 3 * T))
    # kept at once: at most `steps` pairs of each of the 3 convolutions (a group is computed
    # when its last pair arrives), all T where steps >= T
    x_cat, x_h, dz = (2 * 11 * 13 * 11 * 4, 2 * 8 * 13 * 11 * 4, 2 * 16 * 13 * 11 * 4)
    pair = 2 * (x_cat + dz) + (x_h + dz // 2)
    assert S.stats["peak_kept_bytes"] <= min(steps, T) * pair
    assert S._kept_bytes[0] == 0


def test_grouped_equals_per_step_closely():
    frames = _frames()
    got = {}
    for steps in (1, 3):
        S.set_weight_grad_steps(steps)
        p = _params()
        _loop(p, frames).backward()
        got[steps] = _grads(p)
    for k in got[1]:
        assert_close(got[3][k], got[1][k], 2e-6, k)


def test_accumulates_into_existing_grad():
    frames = _frames()
    S.set_weight_grad_steps(1)
    p = _params()
    _loop(p, frames).backward()
    once = _grads(p)
    S.set_weight_grad_steps(2)
    _loop(p, frames).backward()
    for k in p:
        assert_close(p[k].grad, 2 * once[k], 2e-6, k)


def test_autograd_grad_leaves_weights_alone():
    """``torch.autograd.grad`` returns gradients instead of accumulating them: nothing kept,
    nothing added to ``.grad``, and the weights' gradient it returns is the per-step one."""
    S.set_weight_grad_steps(T)
    frames = _frames()
    x0 = frames[0].clone().requires_grad_()
    p = _params()
    gx, = torch.autograd.grad(_loop(p, [x0] + frames[1:]), [x0])
    assert all(v.grad is None for v in p.values())
    gw = torch.autograd.grad(_loop(p, frames), [p["w"], p["wh"]])
    assert all(v.grad is None for v in p.values())
    assert S.stats["calls"] == 0
    S.set_weight_grad_steps(1)
    want = torch.autograd.grad(_loop(p, frames), [p["w"], p["wh"]])
    for a, b in zip(gw, want):
        assert torch.equal(a, b)
    assert torch.isfinite(gx).all()


def test_backward_with_inputs_leaves_others_alone():
    S.set_weight_grad_steps(T)
    p = _params()
    _loop(p, _frames()).backward(inputs=[p["wh"]])
    assert p["w"].grad is None and p["wx"].grad is None
    assert p["wh"].grad is not None
    S.set_weight_grad_steps(1)
    q = {k: v.detach().clone().requires_grad_() for k, v in p.items()}
    _loop(q, _frames()).backward()
    assert_close(p["wh"].grad, q["wh"].grad, 2e-6, "wh")


def test_computed_weights_take_the_per_step_path():
    """A weight computed from a parameter (here scaled) reaches its leaf through a node that
    is not a view: its steps compute their own gradients."""
    S.set_weight_grad_steps(T)
    frames = _frames()
    p = _params()
    scaled = dict(p, wh=p["wh"] * 2.0)
    _loop(scaled, frames).backward()
    assert S.stats["pairs"] == 2 * T  # the two summed convolutions only
    S.set_weight_grad_steps(1)
    q = {k: v.detach().clone().requires_grad_() for k, v in p.items()}
    _loop(dict(q, wh=q["wh"] * 2.0), frames).backward()
    for k in p:
        assert_close(p[k].grad, q[k].grad, 2e-6, k)


@pytest.mark.filterwarnings("ignore:fastcells conv2d:RuntimeWarning")  # 1x1: oneDNN
@pytest.mark.parametrize("layer", ["ConvLSTM", "SpatioTemporalLSTM"])
def test_layers_train_alike(layer):
    """A two-layer sequence layer on the C++ backend: grouped weight gradients match the
    reference backend's at the cells' tolerance."""
    torch.manual_seed(0)
    kwargs = dict(kernel_size=5, num_layers=2, batch_first=True)
    mods = {b: getattr(fc, layer)(3, 6, backend=b, **kwargs) for b in ("reference", "cpp")}
    mods["cpp"].load_state_dict(mods["reference"].state_dict())
    x = torch.randn(2, 4, 3, 9, 11)
    S.set_weight_grad_steps(3)
    for m in mods.values():
        out = m(x)[0]
        (out * out).sum().backward()
    assert S.stats["pairs"] > 0
    ref = dict(mods["reference"].named_parameters())
    for name, prm in mods["cpp"].named_parameters():
        assert_close(prm.grad, ref[name].grad, RTOL[torch.float32], name)


def test_benchmark_script_runs(tmp_path):
    """benchmarks/weight_grad_steps.py at its tiny size: both sections measured, the steps
    grouped in the training row, the summed call agreeing with the per-step calls, and the
    report written."""
    import importlib.util
    import json
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks",
                        "weight_grad_steps.py")
    spec = importlib.util.spec_from_file_location("weight_grad_steps_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    before = fc.get_weight_grad_steps()
    result = bench.main(["--quick", "--repeats", "1", "--json", str(out), "--markdown",
                         str(md)])
    assert result["kernel"][0]["rel_diff"] < RTOL[torch.float32]
    assert result["train"][0]["grouped_pairs"] > 0 and result["train"][0]["kept_mb"] > 0
    assert json.loads(out.read_text())["train"][0]["steps"] == 4
    assert "| ConvLSTM 8 ch k5 |" in md.read_text()
    assert fc.get_weight_grad_steps() == before  # the script restores the settings
    assert fc.get_conv_algorithm() == {p: "winograd8" for p in ("forward", "input", "weight")}
