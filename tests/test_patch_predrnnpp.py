"""fastcells.patch on OpenSTL's PredRNN++ (tests/public/openstl.py re-creations):
``CausalLSTMCell`` and ``GHU`` drop-ins inside the whole model, as tests/test_patch.py
does for the other families."""
import io
import warnings

import pytest
import torch

import fastcells as fc
from fastcells.patching import PatchWarning, convert
from fastcells.patching.openstl_predrnnpp import OpenSTLCausalLSTMCell, OpenSTLGHU

from .conftest import requires_cpp
from .helpers import assert_close, randomize
from .public import openstl

PRE, AFT = 3, 3


def _model(size=(10, 6), hidden=(5, 5, 5), patch=2):
    cfg = openstl.configs((PRE + AFT, 1, *size), patch, 3, PRE, AFT)
    model = openstl.PredRNNpp_Model(len(hidden), list(hidden), cfg)
    randomize(model)
    return model


def _inputs(model, batch=2):
    cfg = model.configs
    _, c, h, w = cfg.in_shape
    p = cfg.patch_size
    frames = torch.rand(batch, PRE + AFT, h // p, w // p, p * p * c)
    mask = (torch.rand(batch, AFT - 1, 1, 1, 1) < 0.5).float().expand(
        batch, AFT - 1, h // p, w // p, p * p * c)
    return frames, mask


def _run(model, frames, mask, weights):
    frames = frames.clone().requires_grad_()
    out = model(frames, mask)
    grads = torch.autograd.grad((out * weights).sum(), [frames, *model.parameters()],
                                allow_unused=True)
    return out, grads


@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=requires_cpp), "reference"])
def test_patched_model_matches_original(backend):
    """(OpenSTL's model cannot run with layer_norm: its GHU's LayerNorm does not fit;
    test_drop_in_apis_are_kept converts a layer-normed causal cell.)"""
    model = _model()
    frames, mask = _inputs(model)
    weights = torch.randn(2, PRE + AFT - 1, *frames.shape[2:])
    keys = [(k, v.shape) for k, v in model.state_dict().items()]
    saved = io.BytesIO()
    torch.save(model.state_dict(), saved)
    out_o, grads_o = _run(model, frames, mask, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PatchWarning)
        replaced = fc.patch(model, backend=backend)
    assert replaced == ["gradient_highway", "cell_list.0", "cell_list.1", "cell_list.2"]
    assert isinstance(model.gradient_highway, OpenSTLGHU)
    assert all(isinstance(c, OpenSTLCausalLSTMCell) for c in model.cell_list)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == keys
    saved.seek(0)
    model.load_state_dict(torch.load(saved))  # a checkpoint saved before patching loads
    out_p, grads_p = _run(model, frames, mask, weights)
    assert_close(out_p, out_o, 1e-5, "output")
    for i, (a, e) in enumerate(zip(grads_p, grads_o)):
        assert (a is None) == (e is None), i  # conv_o: never called, no gradient
        if e is not None:
            assert_close(a, e, 1e-4, f"grad {i}")
    fc.unpatch(model)
    assert type(model.gradient_highway) is openstl.GHU
    assert type(model.cell_list[0]) is openstl.CausalLSTMCell


@requires_cpp
def test_drop_in_apis_are_kept():
    x, h, c, m = torch.randn(1, 3, 5, 7), *(torch.randn(1, 4, 5, 7) for _ in range(3))
    for layer_norm in (False, True):
        cell = openstl.CausalLSTMCell(3, 4, 5, 7, 3, 1, layer_norm)
        randomize(cell)
        drop = convert(cell, "cpp")
        assert drop.layer_norm == layer_norm and drop.unused_conv_o
        for a, e in zip(drop(x, h, c, m), cell(x, h, c, m)):
            assert_close(a, e, 1e-5)
    assert drop.num_hidden == 4 and drop._forget_bias == 1.0
    ghu = openstl.GHU(4, 4, 5, 7, 3, 1, False)
    g = convert(ghu, "reference")
    assert_close(g(h, None), ghu(h, None), 1e-6)
    assert_close(g(h, c), ghu(h, c), 1e-6)
    assert list(g.state_dict()) == ["z_concat.0.weight", "x_concat.0.weight"]


def _lookalikes():
    items = [(openstl.CausalLSTMCell(3, 4, 5, 7, 3, 2, False), "stride"),
             (openstl.GHU(3, 4, 5, 7, 3, 1, False), "expected 4 -> 8"),
             (openstl.GHU(4, 4, 5, 7, 3, 1, True), "normalizes")]

    class CausalLSTMCell(openstl.CausalLSTMCell):  # same structure, another forward
        def forward(self, x_t, h_t, c_t, m_t):
            h, c, m = super().forward(x_t, h_t, c_t, m_t)
            return h, c, torch.sigmoid(m)

    items.append((CausalLSTMCell(3, 4, 5, 7, 3, 1, False), "computes something else"))
    return items


@pytest.mark.parametrize("i", range(4))
def test_lookalikes_are_left_alone_and_reported(i):
    module, reason = _lookalikes()[i]
    with pytest.raises(ValueError, match=reason):
        convert(module)
    holder = torch.nn.Sequential(module)
    with pytest.warns(PatchWarning, match=reason):
        assert fc.patch(holder) == []
    assert holder[0] is module
