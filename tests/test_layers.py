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
