"""Sequence layers: the fused backends equal the reference; the reference layer equals a
hand-written loop over reference cells (zigzag memory for ST-LSTM)."""
import pytest
import torch

import fastcells as fc
from fastcells import _ext

from .conftest import requires_cpp
from .helpers import RTOL, assert_close, randomize

LAYERS = {
    "convlstm": lambda **kw: fc.ConvLSTM(3, 4, kernel_size=3, **kw),
    "stlstm": lambda **kw: fc.SpatioTemporalLSTM(3, 4, kernel_size=3, **kw),
    "stlstm_ln": lambda **kw: fc.SpatioTemporalLSTM(3, 4, layer_norm=True, bias=True,
                                                    spatial_size=(7, 9), **kw),
    "mklstm": lambda **kw: fc.MKLSTM(3, 4, **kw),
    "convttlstm": lambda **kw: fc.ConvTTLSTM(3, 4, order=2, steps=3, rank=3, kernel_size=3, **kw),
    "causal_lstm": lambda **kw: fc.CausalLSTM(3, 4, kernel_size=3, **kw),  # with the highway
}


def _flatten(states):
    out = []
    for s in states:
        for t in s:
            out.extend(t if isinstance(t, tuple) else [t])
    return out


def _pair(name, variant, num_layers=2, batch_first=True):
    ref = LAYERS[name](num_layers=num_layers, batch_first=batch_first, backend="reference")
    randomize(ref)
    other = LAYERS[name](num_layers=num_layers, batch_first=batch_first, **variant)
    other.load_state_dict(ref.state_dict())
    return ref, other


@requires_cpp
@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("variant", [{"backend": "cpp"},
                                     {"backend": "cpp", "batch_input_projection": True},
                                     {"backend": "cpp", "memory_efficient": True}],
                         ids=["cpp", "cpp_batched_projection", "cpp_memeff"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_layer_matches_reference(name, variant, batch_first):
    ref, other = _pair(name, variant, batch_first=batch_first)
    b, t = 2, 4
    x = torch.randn(b, t, 3, 7, 9)
    if not batch_first:
        x = x.transpose(0, 1)
    x.requires_grad_()
    out_r, st_r = ref(x)
    out_o, st_o = other(x)
    assert out_o.shape == x.shape[:2] + (4, 7, 9)
    assert_close(out_o, out_r, RTOL[torch.float32], "output")
    for a, e in zip(_flatten(st_o), _flatten(st_r)):
        assert_close(a, e, RTOL[torch.float32], "last state")
    # continue from the returned state, then differentiate through both segments
    out_r2, _ = ref(x, st_r)
    out_o2, _ = other(x, st_o)
    g = torch.randn_like(out_r)
    leaves_r = [x, *ref.parameters()]
    leaves_o = [x, *other.parameters()]
    gr = torch.autograd.grad((out_r * g).sum() + (out_r2 * g).sum(), leaves_r)
    go = torch.autograd.grad((out_o * g).sum() + (out_o2 * g).sum(), leaves_o)
    for i, (a, e) in enumerate(zip(go, gr)):
        assert_close(a, e, RTOL[torch.float32], f"grad {i}")


@requires_cpp
def test_first_layer_input_projection_is_batched(monkeypatch):
    layer = fc.ConvLSTM(3, 4, num_layers=2, backend="cpp", batch_input_projection=True)
    calls = []
    orig = type(layer.cells[0]).input_projection
    monkeypatch.setattr(type(layer.cells[0]), "input_projection",
                        lambda self, x: calls.append(x.shape) or orig(self, x))
    layer(torch.randn(2, 5, 3, 6, 6))
    assert calls == [(2, 5, 3, 6, 6)]
    calls.clear()
    layer.batch_input_projection = None  # auto: per-step on CPU (measured faster there)
    layer(torch.randn(2, 5, 3, 6, 6))
    assert calls == []


@pytest.mark.parametrize("name", ["convlstm", "mklstm", "convttlstm"])
def test_reference_layer_is_a_loop_of_cells(name):
    layer = LAYERS[name](num_layers=2, backend="reference")
    x = torch.randn(2, 3, 3, 7, 9)
    out, states = layer(x)
    s = [None, None]
    for t in range(3):
        inp = x[:, t]
        for i, cell in enumerate(layer.cells):
            s[i] = cell(inp, s[i])
            inp = s[i][0]
        assert_close(out[:, t], inp, 1e-7)
    for a, e in zip(_flatten(states), _flatten(s)):
        assert_close(a, e, 1e-7)


def test_reference_stlstm_layer_zigzag():
    layer = fc.SpatioTemporalLSTM(3, 4, num_layers=3, backend="reference")
    x = torch.randn(1, 3, 3, 6, 6)
    out, states = layer(x)
    z = torch.zeros(1, 4, 6, 6)
    hc = [(z, z)] * 3
    m = z
    for t in range(3):
        inp = x[:, t]
        for i, cell in enumerate(layer.cells):
            h, c, m = cell(inp, (*hc[i], m))  # m rises through the layers, then wraps to 0
            hc[i] = (h, c)
            inp = h
        assert_close(out[:, t], inp, 1e-7)
    assert_close(states[-1][2], m, 1e-7)


def test_layer_backend_property():
    layer = fc.MKLSTM(3, 4, num_layers=2)
    assert layer.backend == ("cpp" if _ext.cpp_available() else "reference")


def test_reference_causal_lstm_layer_zigzag_and_highway():
    layer = fc.CausalLSTM(3, 4, num_layers=3, backend="reference")
    randomize(layer)
    x = torch.randn(1, 3, 3, 6, 6)
    out, states = layer(x)
    zero = torch.zeros(1, 4, 6, 6)
    hc, m, z = [(zero, zero)] * 3, zero, zero
    for t in range(3):
        inp = x[:, t]
        for i, cell in enumerate(layer.cells):
            h, c, m = cell(inp, (*hc[i], m))  # m rises through the layers, then wraps to 0
            hc[i] = (h, c)
            inp = h
            if i == 0:  # PredRNN++: the second layer reads the highway's z
                z = inp = layer.highway(h, z)
        assert_close(out[:, t], inp, 1e-7)
    assert_close(states[-1][2], m, 1e-7)
    assert_close(states[0][3], z, 1e-7)
    with pytest.raises(ValueError, match="highway"):
        fc.CausalLSTM(3, 4, num_layers=1, highway=True)
    assert fc.CausalLSTM(3, 4, num_layers=1).highway is None


def _mim_pair(variant, batch_first=True):
    ref = fc.MIM(3, 4, spatial_size=(7, 9), num_layers=3, batch_first=batch_first,
                 backend="reference")
    randomize(ref)
    other = fc.MIM(3, 4, spatial_size=(7, 9), num_layers=3, batch_first=batch_first,
                   **variant)
    other.load_state_dict(ref.state_dict())
    return ref, other


def _mim_tensors(state):
    layers, m, diffs = state
    return [t for s in layers for t in s] + [m] + [t for s in (diffs or []) for t in s]


@requires_cpp
@pytest.mark.parametrize("variant", [{"backend": "cpp"},
                                     {"backend": "cpp", "memory_efficient": True}],
                         ids=["cpp", "cpp_memeff"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_mim_layer_matches_reference(variant, batch_first):
    ref, other = _mim_pair(variant, batch_first)
    x = torch.randn(2, 4, 3, 7, 9)
    if not batch_first:
        x = x.transpose(0, 1)
    x.requires_grad_()
    out_r, st_r = ref(x)
    out_o, st_o = other(x)
    assert out_o.shape == x.shape[:2] + (4, 7, 9)
    assert_close(out_o, out_r, RTOL[torch.float32], "output")
    for a, e in zip(_mim_tensors(st_o), _mim_tensors(st_r)):
        assert_close(a, e, RTOL[torch.float32], "last state")
    out_r2, _ = ref(x, st_r)  # continuing: the diff modules run from the first step
    out_o2, _ = other(x, st_o)
    g = torch.randn_like(out_r)
    gr = torch.autograd.grad((out_r * g).sum() + (out_r2 * g).sum(), [x, *ref.parameters()])
    go = torch.autograd.grad((out_o * g).sum() + (out_o2 * g).sum(), [x, *other.parameters()])
    for i, (a, e) in enumerate(zip(go, gr)):
        assert_close(a, e, RTOL[torch.float32], f"grad {i}")


def test_mim_layer_is_the_zoo_models_stack():
    """fc.MIM is the zoo's mim without its head: same cells, same state, same h."""
    from fastcells import models

    model = models.create("mim", preset="mmnist", hidden_size=4, num_layers=3, kernel_size=3,
                          frame_size=(8, 8), embed=False, patch_size=1, backend="reference")
    layer = fc.MIM(1, 4, spatial_size=(8, 8), num_layers=3, backend="reference")
    layer.load_state_dict({k: v for k, v in model.state_dict().items()
                           if k.startswith(("cells.", "diffs."))}, strict=False)
    missing = set(layer.state_dict()) - set(model.state_dict())
    assert not missing, missing
    x = torch.randn(2, 3, 1, 8, 8)
    out, _ = layer(x)
    state = None
    for t in range(3):
        _, state, _ = model.step(x[:, t], state)
        assert_close(out[:, t], state[0][-1][0], 1e-7)
    with pytest.raises(ValueError, match="num_layers"):
        fc.MIM(3, 4, spatial_size=(7, 9), num_layers=1)
    with pytest.raises(ValueError, match="x"):
        layer(torch.randn(2, 3, 1, 9, 8))
