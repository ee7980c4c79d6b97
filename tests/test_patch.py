"""fastcells.patch on models built from re-creations of the public cells (tests/public)."""
from __future__ import annotations

import copy
import functools
import io
import warnings

import pytest
import torch
from torch import nn

import fastcells
from fastcells.cells.base import CellBase
from fastcells.patching import DropIn, PatchWarning, convert

from .conftest import requires_cpp
from .helpers import assert_close, assert_lookalikes_reported, randomize, rel_error
from .public import msrnn, ndrplz, nvlabs, nvlabs_v4, thuml, thuml_old

B = 2


def _mask(frames, input_length):
    b, t, *rest = frames.shape
    return torch.bernoulli(torch.full((b, t - input_length - 1, *rest), 0.5))


# name -> (model factory, input shape (B, T, C, H, W), forward(model, frames) -> outputs,
#          expected replaced names)
CASES = {
    "ndrplz": (lambda: ndrplz.ConvLSTM(3, 6, (3, 3), 2, batch_first=True),
               (B, 4, 3, 13, 11), lambda m, x: (m(x)[0][0], *m(x)[1][0]),
               ["cell_list.0", "cell_list.1"]),
    "ndrplz_k5_nobias": (lambda: ndrplz.ConvLSTM(3, 5, (5, 5), 1, batch_first=True, bias=False),
                         (1, 3, 3, 7, 9), lambda m, x: m(x)[0][0], ["cell_list.0"]),
    "thuml": (lambda: thuml.RNN(2, [6, 6], 3, 0, filter_size=3, input_length=2),
              (B, 5, 3, 13, 11), lambda m, x: m(x, _mask(x, 2)), ["cell_list.0", "cell_list.1"]),
    "thuml_layer_norm": (lambda: thuml.RNN(2, [5, 5], 3, 9, filter_size=5, layer_norm=True,
                                           input_length=2),
                         (B, 5, 3, 9, 9), lambda m, x: m(x, _mask(x, 2)),
                         ["cell_list.0", "cell_list.1"]),
    "thuml_old": (lambda: thuml_old.RNN(2, [5, 5], 2, 7, filter_size=3, input_length=2),
                  (1, 4, 2, 7, 7), lambda m, x: m(x, _mask(x, 2)), ["cell_list.0", "cell_list.1"]),
    "predrnn_v2": (lambda: thuml.RNNv2(2, [5, 5], 3, 0, filter_size=3, input_length=2),
                   (B, 5, 3, 11, 7), lambda m, x: m(x, _mask(x, 2)),
                   ["cell_list.0", "cell_list.1"]),
    "nvlabs_convlstm": (lambda: nvlabs.ConvLSTMNet(nvlabs.ConvLSTMCell, 3, 6, 2),
                        (B, 4, 3, 11, 9), lambda m, x: m(x), ["layers.b0l0", "layers.b0l1"]),
    "nvlabs_convttlstm": (lambda: nvlabs.ConvLSTMNet(
        functools.partial(nvlabs.ConvTTLSTMCell, order=2, steps=4, ranks=3, kernel_size=3),
        3, 5, 2), (B, 7, 3, 9, 11), lambda m, x: m(x), ["layers.b0l0", "layers.b0l1"]),
    "nvlabs_convttlstm_v4": (lambda: nvlabs.ConvLSTMNet(
        functools.partial(nvlabs_v4.ConvTTLSTMCell, ranks=4, kernel_size=3), 3, 5, 2),
        (1, 6, 3, 7, 9), lambda m, x: m(x), ["layers.b0l0", "layers.b0l1"]),
    "nvlabs_convttlstm_v4_channels": (lambda: nvlabs.ConvLSTMNet(
        functools.partial(nvlabs_v4.ConvTTLSTMCell, concat_temporal=False, order=2, steps=2,
                          ranks=3, kernel_size=3), 2, 4, 1),
        (B, 5, 2, 9, 7), lambda m, x: m(x), ["layers.b0l0"]),
    "msrnn_ms_lstm": (lambda: msrnn.MS_LSTM(3, 6, (B, 12, 8)), (B, 3, 3, 12, 8),
                      lambda m, x: m(x), [f"lstm.{i}" for i in range(6)]),
    "msrnn_stack": (lambda: msrnn.MKStack(3, 5, (B, 13, 11)), (B, 3, 3, 13, 11), lambda m, x: m(x),
                    ["cells.0", "cells.1"]),
}
BACKENDS = ["reference", pytest.param("cpp", marks=requires_cpp)]


def _models(case, dtype=torch.float32):
    factory, shape, _, _ = CASES[case]
    original = factory().to(dtype)
    randomize(original)
    return original, copy.deepcopy(original), shape


def _outputs(case, model, x, forward=None):
    out = (forward or CASES[case][2])(model, x)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _run(case, model, x, weights=None, forward=None):
    """Outputs, and grads of a random projection of them wrt the input and parameters
    (``forward(model, x)`` overrides the case's forward call)."""
    torch.manual_seed(1)  # same masks for both models
    x = x.detach().clone().requires_grad_(True)
    outs = _outputs(case, model, x, forward)
    if weights is None:
        weights = [torch.randn_like(o) for o in outs]
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return outs, x.grad, grads, weights


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_patched_model_matches_original(case, backend):
    original, patched, shape = _models(case)
    names = fastcells.patch(patched, backend=backend)
    assert names == CASES[case][3]
    for name in names:
        cell = patched.get_submodule(name)
        assert isinstance(cell, CellBase) and isinstance(cell, DropIn)
        assert cell.backend == backend
    x = torch.randn(shape)
    want, want_dx, want_dp, weights = _run(case, original, x)
    got, got_dx, got_dp, _ = _run(case, patched, x, weights)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, 1e-5, f"output {i}")
    assert_close(got_dx, want_dx, 1e-4, "input grad")
    assert got_dp.keys() == want_dp.keys()
    for name in want_dp:
        assert_close(got_dp[name], want_dp[name], 1e-4, f"grad {name}")


@pytest.mark.parametrize("case", ["thuml", "predrnn_v2", "msrnn_stack"])
def test_float64_patched_model_is_exact(case):
    original, patched, shape = _models(case, torch.float64)
    fastcells.patch(patched)
    x = torch.randn(shape, dtype=torch.float64)
    want, want_dx, want_dp, weights = _run(case, original, x)
    got, got_dx, got_dp, _ = _run(case, patched, x, weights)
    assert len(got) == len(want) and got_dp.keys() == want_dp.keys()
    for g, w in zip([*got, got_dx, *got_dp.values()], [*want, want_dx, *want_dp.values()]):
        assert_close(g, w, 1e-11)


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_and_checkpoints_are_unchanged(case):
    original, patched, shape = _models(case)
    before = {k: v.shape for k, v in original.state_dict().items()}
    params_before = [id(p) for p in patched.parameters()]
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    fastcells.patch(patched)
    after = {k: v.shape for k, v in patched.state_dict().items()}
    assert list(after) == list(before) and after == before  # same keys, order and shapes
    # the same Parameter objects: optimizers built before patching keep working
    assert [id(p) for p in patched.parameters()] == params_before

    # a checkpoint saved before patching loads after it, and one saved after loads before
    fresh = CASES[case][0]()
    fastcells.patch(fresh)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))
    unpatched = CASES[case][0]()
    unpatched.load_state_dict(fresh.state_dict())
    x = torch.randn(shape)
    with torch.no_grad():
        torch.manual_seed(1)
        want = _outputs(case, original, x)
        torch.manual_seed(1)
        got = _outputs(case, fresh, x)
        torch.manual_seed(1)
        back = _outputs(case, unpatched, x)
    assert len(got) == len(back) == len(want)
    for g, b, w in zip(got, back, want):
        assert_close(g, w, 1e-5)
        assert_close(b, w, 0)


def test_optimizer_built_before_patching_trains_the_patched_model():
    original, patched, shape = _models("ndrplz")
    opt = torch.optim.SGD(patched.parameters(), lr=0.1)
    opt_ref = torch.optim.SGD(original.parameters(), lr=0.1)
    fastcells.patch(patched)
    x = torch.randn(shape)
    for model, o in ((original, opt_ref), (patched, opt)):
        o.zero_grad()
        model(x)[0][0].square().mean().backward()
        o.step()
    for (n, p), q in zip(patched.named_parameters(), original.parameters()):
        assert_close(p.detach(), q.detach(), 1e-6, n)


def test_unpatch_restores_originals_with_trained_weights_and_state():
    model = nvlabs.ConvLSTMNet(nvlabs.ConvTTLSTMCell, 3, 4, 2)
    originals = [model.layers.b0l0, model.layers.b0l1]
    names = fastcells.patch(model)
    x = torch.randn(1, 5, 3, 7, 7)
    model(x).sum().backward()
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(0.1 * p.grad)
    patched_cells = [model.layers.b0l0, model.layers.b0l1]
    assert fastcells.unpatch(model) == names
    assert [model.layers.b0l0, model.layers.b0l1] == originals
    for orig, drop in zip(originals, patched_cells):
        assert orig.hidden_pointer == drop.hidden_pointer == 5 % 3
        assert all(a is b for a, b in zip(orig.hidden_states, drop.hidden_states))
        assert orig.cell_states is drop.cell_states
        assert all(p is q for p, q in zip(orig.parameters(), drop.parameters()))
    assert not any(isinstance(m, DropIn) for m in model.modules())
    assert fastcells.unpatch(model) == []


def test_shared_cell_converts_once_and_patch_is_idempotent():
    cell = ndrplz.ConvLSTMCell(3, 4, (3, 3), True)
    model = nn.ModuleDict({"a": cell, "b": cell})
    assert fastcells.patch(model) == ["a", "b"]
    assert model.a is model.b and isinstance(model.a, DropIn)
    assert fastcells.patch(model) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_nvlabs_checkpointing_and_memory_efficient_match(backend):
    original, patched, shape = _models("nvlabs_convttlstm")
    eff = copy.deepcopy(original)
    fastcells.patch(patched, backend=backend)
    fastcells.patch(eff, backend=backend, memory_efficient=True)
    x = torch.randn(shape)
    want = _run("nvlabs_convttlstm", original, x)
    checkpointing = lambda m, x: m(x, checkpointing=True)  # noqa: E731
    for model, forward in ((patched, checkpointing), (eff, None)):
        got = _run("nvlabs_convttlstm", model, x, want[3], forward)
        assert_close(got[0][0], want[0][0], 1e-5)
        assert_close(got[1], want[1], 1e-4)
        for name in want[2]:
            assert_close(got[2][name], want[2][name], 1e-4, name)


def test_predrnn_v2_cell_returns_deltas():
    cell = thuml.SpatioTemporalLSTMCellV2(3, 4, 0, 3, 1, False)
    randomize(cell)
    drop = convert(copy.deepcopy(cell))
    inputs = [torch.randn(2, c, 7, 5) for c in (3, 4, 4, 4)]
    want, got = cell(*inputs), drop(*inputs)
    assert len(got) == 5 and drop.returns_deltas
    for g, w in zip(got, want):
        assert_close(g, w, 1e-5)
    plain = convert(thuml.SpatioTemporalLSTMCell(3, 4, 0, 3, 1, False))
    assert len(plain(*inputs)) == 3 and not plain.returns_deltas


def test_cell_apis_are_kept():
    drop = convert(ndrplz.ConvLSTMCell(3, 4, (3, 3), True).double())
    h, c = drop.init_hidden(2, (5, 6))
    assert h.shape == c.shape == (2, 4, 5, 6) and h.dtype == torch.float64 and h is not c
    assert (drop.input_dim, drop.hidden_dim, drop.kernel_size, drop.padding, drop.bias) == \
        (3, 4, (3, 3), (1, 1), True)
    mk = msrnn.MK_LSTM_Cell(4, 4, [2, 6, 5], 3, 1, 1)
    drop_mk = convert(copy.deepcopy(mk))
    x = torch.randn(2, 4, 6, 5)
    out, hiddens = drop_mk(x, None)
    want_out, want_hiddens = mk(x, None)
    assert isinstance(hiddens, list) and len(hiddens) == 3 and hiddens[0] is out
    for g, w in zip([out, *hiddens], [want_out, *want_hiddens]):
        assert_close(g, w, 1e-5)
    tt = convert(nvlabs.ConvTTLSTMCell(3, 4))
    with pytest.raises(RuntimeError, match="first_step=True"):
        tt(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match="inputs"):
        tt(torch.randn(1, 2, 5, 5), first_step=True)


def _lookalikes():
    """(module, text the skip reason must contain)."""
    items = []
    three_gates = ndrplz.ConvLSTMCell(3, 4, (3, 3), True)
    three_gates.conv = nn.Conv2d(7, 12, 3, padding=1)
    items.append((three_gates, "expected 7 -> 16"))
    items.append((thuml.SpatioTemporalLSTMCell(3, 4, 0, 3, 2, False), "stride"))
    dilated = nvlabs.ConvLSTMCell(3, 4, 3)
    dilated.conv = nn.Conv2d(7, 16, 3, padding=2, dilation=2)
    items.append((dilated, "dilation"))
    unpadded = ndrplz.ConvLSTMCell(3, 4, (3, 3), True)
    unpadded.conv.padding = (0, 0)
    items.append((unpadded, "padding"))
    items.append((ndrplz.ConvLSTMCell(3, 4, (3, 5), True), "odd square"))

    class ConvLSTMCell(ndrplz.ConvLSTMCell):  # same name and structure, other function
        def forward(self, input_tensor, cur_state):
            h, c = super().forward(input_tensor, cur_state)
            return h, c * 0.5

    items.append((ConvLSTMCell(3, 4, (3, 3), True), "computes something else"))
    items.append((nvlabs_v4.ConvTTLSTMCell(3, 4, version="v2"), "version='v2'"))
    items.append((nvlabs_v4.ConvTTLSTMCell(3, 4, order=2, steps=3), "modulo order"))
    items.append((msrnn.MK_LSTM_Cell(4, 6, [1, 5, 5], 3, 1, 1), "input_channel 4 != "))

    class SpatioTemporalLSTMCell(nn.Module):  # the name, another layout
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 12, 3, padding=1)

    items.append((SpatioTemporalLSTMCell(), "match no recognised layout"))
    odd_ln = thuml.SpatioTemporalLSTMCell(3, 4, 5, 3, 1, True)
    odd_ln.conv_h[1] = nn.LayerNorm([16, 5, 5], eps=1e-3)
    items.append((odd_ln, "eps"))

    class SpatioTemporalLSTMCell(thuml.SpatioTemporalLSTMCell):  # default init, tiny change
        def forward(self, x_t, h_t, c_t, m_t):
            self._forget_bias = 1.0 + 1e-3  # read after the structural check
            try:
                return super().forward(x_t, h_t, c_t, m_t)
            finally:
                self._forget_bias = 1.0

    items.append((SpatioTemporalLSTMCell(3, 4, 0, 3, 1, False), "computes something else"))

    class ConvTTLSTMCell(nvlabs.ConvTTLSTMCell):  # newest state first: differs from step 2
        def window(self, input_pointer):
            states = self.hidden_states[input_pointer:] + self.hidden_states[:input_pointer]
            return torch.cat(states[:self.lags][::-1], dim=1)

    items.append((ConvTTLSTMCell(3, 4, order=2, steps=3, ranks=3, kernel_size=3),
                  "computes something else"))

    class ConvLSTMCell(nvlabs.ConvLSTMCell):  # dropout only in training (patched in eval)
        def forward(self, inputs, first_step=False, checkpointing=False):
            h = super().forward(inputs, first_step, checkpointing)
            self.hidden_states = nn.functional.dropout(h, 0.3, self.training)
            return self.hidden_states

    items.append((ConvLSTMCell(3, 4, 3).eval(), "training mode"))
    extra = ndrplz.ConvLSTMCell(3, 4, (3, 3), True)
    extra.drop = nn.Dropout(0.1)
    items.append((extra, "submodules the public cell does not (drop)"))
    counter = ndrplz.ConvLSTMCell(3, 4, (3, 3), True)
    counter.register_buffer("steps_seen", torch.zeros(()))
    items.append((counter, "parameters/buffers of its own (steps_seen)"))
    hooked = ndrplz.ConvLSTMCell(3, 4, (3, 3), True)
    hooked.register_forward_hook(lambda *a: None)
    items.append((hooked, "hooks (forward_hooks)"))
    conv_hooked = msrnn.MK_LSTM_Cell(4, 4, [1, 5, 5], 3, 1, 1)
    conv_hooked._conv_out.register_forward_pre_hook(lambda *a: None)
    items.append((conv_hooked, "_conv_out has hooks (forward_pre_hooks)"))
    normed = ndrplz.ConvLSTMCell(3, 4, (3, 3), True)
    with warnings.catch_warnings():  # the deprecated form users' old code still has
        warnings.simplefilter("ignore", FutureWarning)
        normed.conv = torch.nn.utils.weight_norm(normed.conv)
    items.append((normed, "weight reparametrized"))
    spectral = nvlabs.ConvLSTMCell(3, 4, 3)
    spectral.conv = torch.nn.utils.spectral_norm(spectral.conv)
    items.append((spectral, "weight reparametrized"))
    return items


def test_lookalikes_are_left_alone_and_reported():
    items = _lookalikes()
    assert_lookalikes_reported(items)


def test_convert_and_patch_errors():
    with pytest.raises(ValueError, match="stride"):
        convert(thuml.SpatioTemporalLSTMCell(3, 4, 0, 3, 2, False))
    with pytest.raises(ValueError, match="fastcells.patching.convert"):
        fastcells.patch(ndrplz.ConvLSTMCell(3, 4, (3, 3), True))
    with pytest.raises(ValueError, match="backend"):
        fastcells.patch(nn.Sequential(), backend="fast")


def test_verify_false_converts_without_probe(monkeypatch):
    import fastcells.patching as patching

    def fail(*args, **kwargs):
        raise AssertionError("the probe ran")

    monkeypatch.setattr(patching, "verify", fail)
    model = nn.Sequential(ndrplz.ConvLSTMCell(3, 4, (3, 3), True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fastcells.patch(model, verify=False) == ["0"]
    with pytest.raises(AssertionError, match="the probe ran"):
        fastcells.patch(nn.Sequential(ndrplz.ConvLSTMCell(3, 4, (3, 3), True)))


def test_a_failing_cell_leaves_the_model_unpatched():
    """A conversion that fails (here the probe on a cell whose state has autograd history
    and an unrunnable forward) is a skip, and no other cell of the model is replaced
    half-way: all conversions run before the first replacement."""
    class ConvLSTMCell(ndrplz.ConvLSTMCell):
        def forward(self, input_tensor, cur_state):
            raise RuntimeError("boom")

    model = nn.ModuleList([ndrplz.ConvLSTMCell(3, 4, (3, 3), True),
                           ConvLSTMCell(3, 4, (3, 3), True)])
    with pytest.warns(PatchWarning, match="boom"):
        assert fastcells.patch(model) == ["0"]
    tt = nvlabs.ConvLSTMNet(nvlabs.ConvTTLSTMCell, 2, 3, 1)
    tt(torch.randn(1, 2, 2, 5, 5, requires_grad=True))  # its state now has history
    assert fastcells.patch(tt) == ["layers.b0l0"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_efficient_and_checkpointing_keep_less_for_backward(backend):
    from fastcells.utils import saved_tensor_bytes
    original, default, shape = _models("nvlabs_convttlstm")
    eff = copy.deepcopy(original)
    fastcells.patch(default, backend=backend)
    fastcells.patch(eff, backend=backend, memory_efficient=True)
    assert all(c.memory_efficient for c in eff.layers.values())
    x = torch.randn(shape)
    counts = {name: saved_tensor_bytes(lambda m=m, ck=ck: m(x, checkpointing=ck),
                                       exclude=m.parameters())
              for name, m, ck in [("default", default, False), ("eff", eff, False),
                                  ("ckpt", default, True)]}
    assert counts["eff"] < 0.6 * counts["default"]
    assert counts["ckpt"] == counts["eff"]


def test_float64_nvlabs_drop_in():
    """NVlabs' own cells make float32 zero states (they fail in float64); the drop-ins take
    the input's dtype."""
    original, patched, shape = _models("nvlabs_convttlstm")
    fastcells.patch(patched.double())
    x = torch.randn(shape)
    with torch.no_grad():
        assert_close(patched(x.double()), original(x), 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_patched_model_under_autocast(backend):
    """Inside torch.autocast the cells run in float32 (as autocast's float32 ops do):
    the patched model is at least as close to the float32 result as the original under
    autocast."""
    original, patched, shape = _models("thuml")
    fastcells.patch(patched, backend=backend)
    x = torch.randn(shape)
    mask = torch.ones(shape[0], shape[1] - 3, *shape[2:])
    with torch.no_grad():
        want = original(x, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, eager = patched(x, mask), original(x, mask)
    assert got.dtype == eager.dtype == torch.bfloat16
    assert_close(got.float(), want, 2 * max(rel_error(eager.float(), want), 1e-3))


def test_patched_model_pickles_and_deepcopies():
    original, patched, shape = _models("nvlabs_convttlstm")
    fastcells.patch(patched)
    buffer = io.BytesIO()
    torch.save(patched, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    clone = copy.deepcopy(patched)
    x = torch.randn(shape)
    with torch.no_grad():
        want = original(x)
        for model in (loaded, clone):
            assert isinstance(model.layers.b0l0, DropIn)
            assert_close(model(x), want, 1e-5)
    assert fastcells.unpatch(clone) == ["layers.b0l0", "layers.b0l1"]


def test_unrecognised_recurrent_modules_are_reported():
    """patch() is never silent: a model with nothing converted, and a cell of a family it
    does not know (a recurrent class name holding convolutions), are in the PatchWarning;
    a model class around converted cells is not."""
    with pytest.warns(PatchWarning, match="converted nothing: no module of this Sequential"):
        assert fastcells.patch(nn.Sequential(nn.Conv2d(3, 4, 3), nn.LSTM(4, 4))) == []

    class MAUCell(nn.Module):  # an unknown family
        def __init__(self):
            super().__init__()
            self.conv_t = nn.Sequential(nn.Conv2d(4, 12, 3, padding=1))

    class ConvLSTM_Model(nn.Module):  # holds converted cells: not reported
        def __init__(self):
            super().__init__()
            self.cell_list = nn.ModuleList([ndrplz.ConvLSTMCell(3, 4, (3, 3), True)])
            self.conv_last = nn.Conv2d(4, 3, 1)

    class MAU_RNN(nn.Module):  # reported through its cells, not itself
        def __init__(self):
            super().__init__()
            self.cells = nn.ModuleList([MAUCell(), MAUCell()])
            self.head = nn.Conv2d(4, 3, 1)

    model = nn.ModuleDict({"convlstm": ConvLSTM_Model(), "mau": MAU_RNN()})
    with pytest.warns(PatchWarning) as record:
        assert fastcells.patch(model) == ["convlstm.cell_list.0"]
    lines = str(record[0].message).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "mau.cells.0 (MAUCell)", "mau.cells.1 (MAUCell)"]
    assert all("looks like a recurrent cell" in line for line in lines)
    with warnings.catch_warnings():  # patched already: nothing new to say
        warnings.simplefilter("error")
        fastcells.patch(nn.Sequential(fastcells.ConvLSTMCell(3, 4)))
    with pytest.warns(PatchWarning, match=r"\(the model\) \(MAUCell\)"):
        fastcells.patch(MAUCell())


def test_probe_is_cheap_and_leaves_threads_alone():
    """A 4-layer, 128-channel, kernel-5 PredRNN (OpenSTL's Moving MNIST configuration)
    patches in well under a second with the probe on (0.6 s here; 12 s before the probe was
    made small and single-threaded; the bound leaves room for a busy CI machine). The probe
    runs on one thread and restores the thread count."""
    import time

    seen = []

    class SpatioTemporalLSTMCell(thuml.SpatioTemporalLSTMCell):
        def forward(self, *args):
            if args[0].device.type != "meta":  # (the output count runs on shapes only)
                seen.append((torch.get_num_threads(), args[0].shape[0], *args[0].shape[2:]))
            return super().forward(*args)

    class RNN(thuml.RNN):
        cell_class = SpatioTemporalLSTMCell

    model = RNN(4, [128] * 4, 16, 16, filter_size=5, input_length=10)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    assert len(fastcells.patch(model)) == 4
    elapsed = time.perf_counter() - start
    assert torch.get_num_threads() == threads
    assert elapsed < 6.0, f"patch() took {elapsed:.2f} s"
    assert seen == [(1, 1, 3, 4)] * 4 * 2  # training and eval mode, one thread, small
