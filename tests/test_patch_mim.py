"""fastcells.patch on MIM models built from re-creations of the public code: OpenSTL's MIM_Model
(tests/public/openstl_mim.py: ST-LSTM layer 0, MIMBlock layers, MIMN diff modules) and
MS-RNN's MIM stack (tests/public/msrnn_mim.py: MIM_Cell layers)."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import fastcells
from fastcells.cells.base import CellBase
from fastcells.patching import DropIn, convert

from .conftest import requires_cpp
from .helpers import assert_close, assert_lookalikes_reported, randomize
from .models_helpers import one_thread  # noqa: F401 (fixture)
from .public import msrnn_mim, openstl_mim

# tiny tensors: a second OpenMP thread only adds overhead (models_helpers.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")
B = 2
OPENSTL_NAMES = ["stlstm_layer.0", "stlstm_layer.1", "stlstm_layer.2", "stlstm_layer_diff.0",
                 "stlstm_layer_diff.1"]


def _openstl(layer_norm):
    """3 layers of 5, kernel 3, patch 2 on 10x14 frames (5x7 patched), 4 -> 3 frames."""
    cfg = openstl_mim.configs(in_shape=(4, 1, 10, 14), patch_size=2, filter_size=3,
                              pre_seq_length=4, aft_seq_length=3, layer_norm=layer_norm)
    return openstl_mim.MIM_Model(3, [5, 5, 5], cfg)


def _openstl_forward(model, frames):
    """Two batches in a row: the second starts from the convlstm_c the first left behind.
    frames (B, 7, 5, 7, 4) patched; the scheduled-sampling mask is drawn from the seed."""
    mask = torch.bernoulli(torch.full((frames.shape[0], 2, *frames.shape[2:]), 0.5))
    return [model(frames, mask), model(frames.flip(1), 1 - mask)]


# name -> (model factory, input shape, forward(model, frames) -> outputs, replaced names)
CASES = {
    "openstl_mim": (lambda: _openstl(False), (B, 7, 5, 7, 4), _openstl_forward, OPENSTL_NAMES),
    "openstl_mim_layer_norm": (lambda: _openstl(True), (1, 7, 5, 7, 4), _openstl_forward,
                               OPENSTL_NAMES),
    "msrnn_mim": (lambda: msrnn_mim.MIM(2, 5, (B, 7, 9), num_layers=3), (B, 4, 2, 7, 9),
                  lambda m, x: [m(x)], ["lstm.0", "lstm.1", "lstm.2"]),
}
BACKENDS = ["reference", pytest.param("cpp", marks=requires_cpp)]


def _models(case, dtype=torch.float32):
    factory, shape, _, _ = CASES[case]
    original = factory().to(dtype)
    randomize(original)
    with torch.no_grad():  # MIM's per-pixel peepholes start at zero: make them matter
        for name, p in original.named_parameters():
            if name.endswith(("ct_weight", "oc_weight")):
                p.normal_(0, 0.5)
    return original, copy.deepcopy(original), shape


def _run(case, model, x, weights=None):
    """Outputs, and grads of a random projection of them wrt the input and parameters."""
    torch.manual_seed(1)  # the same masks for both models
    x = x.detach().clone().requires_grad_(True)
    outs = CASES[case][2](model, x)
    if weights is None:
        weights = [torch.randn_like(o) for o in outs]
    params = [p for _, p in model.named_parameters()]
    grads = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)),
                                [x, *params], allow_unused=True)
    names = [n for n, _ in model.named_parameters()]
    return outs, grads[0], dict(zip(names, grads[1:])), weights


def _compare(case, original, patched, x, rtol_out, rtol_grad):
    want, want_dx, want_dp, weights = _run(case, original, x)
    got, got_dx, got_dp, _ = _run(case, patched, x, weights)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, rtol_out, f"output {i}")
    assert_close(got_dx, want_dx, rtol_grad, "input grad")
    assert list(got_dp) == list(want_dp)
    for name, w in want_dp.items():
        # MIMN's conv_last and the first MS-RNN layer's n/s convolutions get none
        assert (got_dp[name] is None) == (w is None), name
        if w is not None:
            assert_close(got_dp[name], w, rtol_grad, f"grad {name}")


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
    _compare(case, original, patched, torch.randn(shape), 1e-5, 1e-4)
    if case.startswith("openstl"):  # the carried stationarity states are the same
        for i in (1, 2):
            assert_close(patched.stlstm_layer[i].convlstm_c, original.stlstm_layer[i].convlstm_c,
                         1e-5)


@requires_cpp
@pytest.mark.parametrize("case", ["openstl_mim_layer_norm", "msrnn_mim"])
def test_float64_patched_model_and_memory_efficient(case):
    original, patched, shape = _models(case, torch.float64)
    eff, original_too = copy.deepcopy(original), copy.deepcopy(original)
    fastcells.patch(patched)
    fastcells.patch(eff, memory_efficient=True)
    assert all(c.memory_efficient for c in eff.modules() if isinstance(c, DropIn))
    x = torch.randn(shape, dtype=torch.float64)
    with _default_dtype(torch.float64):  # the models make their zero states in it
        _compare(case, original, patched, x, 1e-11, 1e-11)
        _compare(case, original_too, eff, x, 1e-11, 1e-11)


class _default_dtype:
    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        self.saved = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.saved)


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
    # the same Parameter objects (peepholes included): optimizers built before keep working
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
        outs = []
        for model in (original, fresh, unpatched):
            torch.manual_seed(1)
            outs.append(CASES[case][2](model, x))
    for w, g, b in zip(*outs):
        assert_close(g, w, 1e-5)
        assert_close(b, w, 0)


def test_unpatch_restores_originals_with_convlstm_c():
    """Training and the carried convlstm_c survive unpatch; the original then continues
    from that state exactly as the drop-in would."""
    original, model, shape = _models("openstl_mim")
    blocks = [model.stlstm_layer[1], model.stlstm_layer[2]]
    names = fastcells.patch(model)
    x = torch.randn(shape)
    torch.manual_seed(1)
    sum(o.sum() for o in _openstl_forward(model, x)).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
    drops = [model.stlstm_layer[1], model.stlstm_layer[2]]
    for drop in drops:  # (deepcopy takes no tensor with autograd history; nor does OpenSTL's)
        drop.convlstm_c = drop.convlstm_c.detach()
    follow_up = copy.deepcopy(model)  # still patched, same state
    assert fastcells.unpatch(model) == names
    assert [model.stlstm_layer[1], model.stlstm_layer[2]] == blocks
    for orig, drop in zip(blocks, drops):
        assert orig.convlstm_c is drop.convlstm_c and orig.convlstm_c is not None
        assert all(p is q for p, q in zip(orig.parameters(), drop.parameters()))
        assert list(orig.state_dict()) == list(drop.state_dict())
    assert not any(isinstance(m, DropIn) for m in model.modules())
    with torch.no_grad():
        torch.manual_seed(2)
        want = _openstl_forward(follow_up, x)
        torch.manual_seed(2)
        got = _openstl_forward(model, x)
    for g, w in zip(got, want):
        assert_close(g, w, 1e-5)
    assert fastcells.unpatch(model) == []


def test_unpatch_restores_msrnn_cells_unchanged():
    model = msrnn_mim.MIM(2, 4, (1, 5, 6))
    cells = list(model.lstm)
    before = [dict(vars(c)) for c in cells]
    names = fastcells.patch(model)
    assert fastcells.unpatch(model) == names == ["lstm.0", "lstm.1"]
    assert list(model.lstm) == cells
    for cell, attrs in zip(cells, before):  # nothing of the drop-in's left on them
        assert vars(cell).keys() == attrs.keys()
        assert all(vars(cell)[k] == v for k, v in attrs.items() if not k.startswith("_"))
        assert [vars(cell)[k] for k in ("_input_channel", "_output_channel", "_state_height",
                                        "_state_width")] == [4, 4, 5, 6]


def test_mim_cell_apis():
    """The single modules: OpenSTL's MIMBlock over calls (convlstm_c read detached and written
    back, None states, a stored batch-1 state broadcast like OpenSTL's arithmetic does), its
    MIMN (None states, x=None), MS-RNN's MIM_Cell (None inputs, l)."""
    torch.manual_seed(0)
    block = openstl_mim.MIMBlock(4, 4, 5, 6, 3, 1, True)
    randomize(block)
    drop = convert(copy.deepcopy(block))
    assert isinstance(drop, DropIn) and drop.convlstm_c is None
    x1 = torch.randn(1, 4, 5, 6)
    xs = [x1, torch.randn(3, 4, 5, 6), torch.randn(3, 4, 5, 6)]
    hcm_p = hcm_d = (None, None, None)
    for t, x in enumerate(xs):
        diff = None if t == 0 else torch.randn_like(x)
        if t == 1:  # batch 1 -> 3: states restart, convlstm_c (batch 1) broadcasts
            hcm_p = hcm_d = (None, None, None)
        hcm_p, hcm_d = block(x, diff, *hcm_p), drop(x, diff, *hcm_d)
        for g, w in zip([*hcm_d, drop.convlstm_c], [*hcm_p, block.convlstm_c]):
            assert_close(g, w, 1e-5)
    assert drop.convlstm_c.grad_fn is not None  # stored with its history, as OpenSTL does

    mimn = openstl_mim.MIMN(4, 4, 5, 6, 3, 1, False)
    randomize(mimn)
    drop_n = convert(copy.deepcopy(mimn))
    assert isinstance(drop_n.conv_last, nn.Conv2d)  # kept, never called
    x = torch.randn(2, 4, 5, 6)
    state = mimn(x, None, None)
    for g, w in zip(drop_n(x, None, None), state):
        assert_close(g, w, 1e-5)
    for g, w in zip(drop_n(None, *state), mimn(None, *state)):
        assert_close(g, w, 1e-5)
    with pytest.raises(ValueError, match="x=None needs both"):
        drop_n(None, None, state[1])

    cell = msrnn_mim.MIM_Cell(4, 4, [2, 5, 6], 3, 1, 1)
    randomize(cell)
    drop_c = convert(copy.deepcopy(cell))
    for layer in (0, 2):
        want_h, want_m, want_hid = cell(x, None, None, None, layer)
        h, m, hiddens = drop_c(x, None, None, None, layer)
        assert isinstance(hiddens, list) and len(hiddens) == 4 and hiddens[0] is h
        for g, w in zip([h, m, *hiddens], [want_h, want_m, *want_hid]):
            assert_close(g, w, 1e-5)


def _lookalikes():
    """(module, text the skip reason must contain)."""
    items = [(openstl_mim.MIMBlock(4, 4, 5, 5, 3, 2, False), "stride"),
             (openstl_mim.MIMBlock(3, 4, 5, 5, 3, 1, False), "in_channel == num_hidden"),
             (openstl_mim.MIMN(3, 4, 5, 5, 3, 1, False), "conv_h_concat reads 3 channels"),
             (msrnn_mim.MIM_Cell(4, 6, [1, 5, 5], 3, 1, 1), "input_channel 4 != ")]
    biased = openstl_mim.MIMBlock(4, 4, 5, 5, 3, 1, False)
    biased._forget_bias = 0.0
    items.append((biased, "_forget_bias is 0.0"))
    eps = openstl_mim.MIMN(4, 4, 5, 5, 3, 1, True)
    eps.conv_x_concat[1] = nn.LayerNorm([16, 5, 5], eps=1e-3)
    items.append((eps, "eps"))
    extra = openstl_mim.MIMN(4, 4, 5, 5, 3, 1, False)
    extra.scale = nn.Parameter(torch.ones(()))
    items.append((extra, "its own parameters are ['ct_weight', 'oc_weight', 'scale']"))
    wide = msrnn_mim.MIM_Cell(4, 4, [1, 5, 5], 3, 1, 1)
    wide._conv_c_m = nn.Conv2d(8, 4, 3, padding=1)
    items.append((wide, "_conv_c_m is not a 1x1"))

    class MIMBlock(openstl_mim.MIMBlock):  # forgets convlstm_c between calls
        def forward(self, x, diff_h, h, c, m):
            self.convlstm_c = None
            return super().forward(x, diff_h, h, c, m)

    items.append((MIMBlock(4, 4, 5, 5, 3, 1, False), "computes something else"))

    class MIMN(openstl_mim.MIMN):  # another output
        def forward(self, x, h_t, c_t):
            h, c = super().forward(x, h_t, c_t)
            return h, 0.5 * c

    items.append((MIMN(4, 4, 5, 5, 3, 1, False), "computes something else"))

    class MIM_Cell(msrnn_mim.MIM_Cell):  # every layer as a higher one: differs at l = 0
        def forward(self, x, xt_1, m, hiddens, l):  # noqa: E741
            return super().forward(x, xt_1, m, hiddens, 1)

    items.append((MIM_Cell(4, 4, [1, 5, 5], 3, 1, 1), "computes something else"))

    class MIMBlock(nn.Module):  # the name, another layout
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 12, 3, padding=1)

    items.append((MIMBlock(), "match no recognised layout"))
    return items


def test_lookalikes_are_left_alone_and_reported():
    items = _lookalikes()
    assert_lookalikes_reported(items)
    # the conversion left each original as it was (own parameters in their order)
    assert list(items[6][0]._parameters) == ["ct_weight", "oc_weight", "scale"]
