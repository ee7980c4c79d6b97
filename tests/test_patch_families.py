"""fastcells.patch on the OpenSTL and MS-RNN families added for issue 14 (re-creations in
tests/public): patched vs original outputs and gradients over several steps, state_dict and
checkpoints unchanged, look-alikes skipped with a reason."""
from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import fastcells
from fastcells.cells.base import CellBase
from fastcells.patching import DropIn, PatchWarning, convert

from .conftest import requires_cpp
from .helpers import assert_close, assert_lookalikes_reported, randomize
from .public import msrnn_convlstm, msrnn_predrnn
from .public import openstl_convlstm as openstl

B = 2


def _openstl_mask(frames, pre):
    b, t, *rest = frames.shape
    return torch.bernoulli(torch.full((b, t - 1 - pre, *rest), 0.5))


def _openstl(cell, layers, hidden, channels, size, **kwargs):
    return lambda: openstl.RecurrentModel(cell, layers, [hidden] * layers, channels, *size,
                                          **kwargs)


def _openstl_forward(m, x):
    return m(x, _openstl_mask(x, m.pre_seq_length))


def _phyd_forward(m, x):
    outs = []
    for t in range(x.shape[1]):
        (hs, cs), _ = m(x[:, t], first_timestep=t == 0)
        outs += [*hs, *cs]
    return outs


# name -> (model factory, input shape, forward(model, x) -> outputs, expected replaced names)
CASES = {
    "openstl_convlstm": (_openstl(openstl.ConvLSTMCell, 2, 6, 3, (11, 9), filter_size=3),
                         (B, 5, 11, 9, 3), _openstl_forward, ["cell_list.0", "cell_list.1"]),
    "openstl_convlstm_ln_k5": (_openstl(openstl.ConvLSTMCell, 2, 5, 2, (7, 7), layer_norm=True),
                               (1, 4, 7, 7, 2), _openstl_forward, ["cell_list.0", "cell_list.1"]),
    "openstl_predrnn_v2": (_openstl(openstl.SpatioTemporalLSTMCellv2, 2, 5, 3, (9, 9),
                                    filter_size=3),
                           (B, 4, 9, 9, 3), _openstl_forward, ["cell_list.0", "cell_list.1"]),
    "openstl_phydnet": (lambda: openstl.PhyD_ConvLSTM((9, 7), 3, [5, 4], 2, (3, 3)),
                        (B, 4, 3, 9, 7), _phyd_forward, ["cell_list.0", "cell_list.1"]),
    "msrnn_convlstm": (lambda: msrnn_convlstm.ConvLSTM(3, 5, (B, 13, 11)), (B, 3, 3, 13, 11),
                       lambda m, x: m(x), ["lstm.0", "lstm.1"]),
    "msrnn_convlstm_k5": (lambda: msrnn_convlstm.ConvLSTM(2, 4, (1, 7, 9), 1, 5),
                          (1, 4, 2, 7, 9), lambda m, x: m(x), ["lstm.0"]),
    "msrnn_predrnn": (lambda: msrnn_predrnn.PredRNN(3, 5, (B, 11, 9)), (B, 3, 3, 11, 9),
                      lambda m, x: m(x), ["lstm.0", "lstm.1"]),
    "msrnn_predrnn_v2_k5": (lambda: msrnn_predrnn.PredRNN(2, 4, (1, 7, 9), 2, 5, v2=True),
                            (1, 3, 2, 7, 9), lambda m, x: m(x), ["lstm.0", "lstm.1"]),
}
BACKENDS = ["reference", pytest.param("cpp", marks=requires_cpp)]


def _models(case, dtype=torch.float32):
    original = CASES[case][0]().to(dtype)
    randomize(original)
    return original, copy.deepcopy(original), CASES[case][1]


def _outputs(case, model, x):
    out = CASES[case][2](model, x)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _run(case, model, x, weights=None):
    torch.manual_seed(1)  # same masks for both models
    x = x.detach().clone().requires_grad_(True)
    outs = _outputs(case, model, x)
    if weights is None:
        weights = [torch.randn_like(o) for o in outs]
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    return outs, x.grad, {n: p.grad for n, p in model.named_parameters()}, weights


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_patched_model_matches_original(case, backend):
    original, patched, shape = _models(case)
    with warnings.catch_warnings():  # every cell of these models converts: nothing to report
        warnings.simplefilter("error", PatchWarning)
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
        if want_dp[name] is None:  # OpenSTL's conv_o/conv_last: never used, no grad
            assert got_dp[name] is None, name
        else:
            assert_close(got_dp[name], want_dp[name], 1e-4, f"grad {name}")


@pytest.mark.parametrize("case", ["openstl_convlstm", "msrnn_convlstm", "msrnn_predrnn_v2_k5"])
def test_float64_patched_model_is_exact(case):
    original, patched, shape = _models(case, torch.float64)
    fastcells.patch(patched)
    x = torch.randn(shape, dtype=torch.float64)
    want, want_dx, want_dp, weights = _run(case, original, x)
    got, got_dx, got_dp, _ = _run(case, patched, x, weights)
    for g, w in zip([*got, got_dx], [*want, want_dx]):
        assert_close(g, w, 1e-11)
    for name, w in want_dp.items():
        if w is not None:
            assert_close(got_dp[name], w, 1e-11, name)


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
    assert [id(p) for p in patched.parameters()] == params_before
    fresh = CASES[case][0]()
    fastcells.patch(fresh)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))  # saved before patching, loaded after
    unpatched = CASES[case][0]()
    unpatched.load_state_dict(fresh.state_dict())
    x = torch.randn(shape)
    with torch.no_grad():
        outs = []
        for model in (original, fresh, unpatched):
            torch.manual_seed(1)
            outs.append(_outputs(case, model, x))
    for w, g, b in zip(*outs):
        assert_close(g, w, 1e-5)
        assert_close(b, w, 0)


def test_openstl_convlstm_keeps_unused_convs_and_api():
    cell = openstl.ConvLSTMCell(3, 4, 6, 5, 3, 1, True)
    randomize(cell)
    drop = convert(copy.deepcopy(cell))
    assert drop.conv_o is not cell.conv_o and type(drop.conv_o[0]) is nn.Conv2d
    assert list(drop.state_dict()) == list(cell.state_dict())
    assert (drop.num_hidden, drop.padding, drop._forget_bias) == (4, 1, 1.0)
    x, h, c = torch.randn(2, 3, 6, 5), torch.randn(2, 4, 6, 5), torch.randn(2, 4, 6, 5)
    for g, w in zip(drop(x, h, c), cell(x, h, c)):
        assert_close(g, w, 1e-5)
    with pytest.raises(ValueError, match="x_t"):
        drop(torch.randn(2, 2, 6, 5), h, c)
    ms = msrnn_convlstm.ConvLSTM_Cell(4, 4, (2, 6, 5), 3, 1, 1)
    drop_ms = convert(copy.deepcopy(ms))
    out, hiddens = drop_ms(torch.randn(2, 4, 6, 5), None)
    assert isinstance(hiddens, list) and len(hiddens) == 2 and hiddens[0] is out


def test_patched_models_train_like_the_originals():
    """An optimizer built before patching keeps training the same parameters; OpenSTL's
    unused convolutions stay without gradient."""
    original, patched, shape = _models("openstl_convlstm")
    opt = torch.optim.Adam(patched.parameters(), lr=1e-2)
    opt_ref = torch.optim.Adam(original.parameters(), lr=1e-2)
    fastcells.patch(patched)
    x = torch.randn(shape)
    for _ in range(2):
        for model, o in ((original, opt_ref), (patched, opt)):
            o.zero_grad()
            torch.manual_seed(1)
            _openstl_forward(model, x).square().mean().backward()
            o.step()
    for (n, p), q in zip(patched.named_parameters(), original.parameters()):
        assert_close(p.detach(), q.detach(), 1e-5, n)
    assert patched.cell_list[0].conv_last.weight.grad is None


def _lookalikes():
    """(module, text the skip reason must contain)."""
    items = [(openstl.ConvLSTMCell(3, 4, 5, 5, 3, 2, False), "stride")]
    ln_eps = openstl.ConvLSTMCell(3, 4, 5, 5, 3, 1, True)
    ln_eps.conv_h[1] = nn.LayerNorm([16, 5, 5], eps=1e-3)
    items.append((ln_eps, "eps"))
    half_ln = openstl.ConvLSTMCell(3, 4, 5, 5, 3, 1, True)
    half_ln.conv_h = nn.Sequential(half_ln.conv_h[0])
    items.append((half_ln, "LayerNorm after some"))

    class ConvLSTMCell(openstl.ConvLSTMCell):  # reads the forget bias it defines
        def forward(self, x_t, h_t, c_t):
            i_x, f_x, g_x, o_x = torch.split(self.conv_x(x_t), self.num_hidden, dim=1)
            i_h, f_h, g_h, o_h = torch.split(self.conv_h(h_t), self.num_hidden, dim=1)
            c = (torch.sigmoid(f_x + f_h + self._forget_bias) * c_t
                 + torch.sigmoid(i_x + i_h) * torch.tanh(g_x + g_h))
            return torch.sigmoid(o_x + o_h) * torch.tanh(c), c

    items.append((ConvLSTMCell(3, 4, 5, 5, 3, 1, False), "computes something else"))

    class ConvLSTMCell(openstl.ConvLSTMCell):  # ndrplz's gate order in OpenSTL's layout
        def forward(self, x_t, h_t, c_t):
            i, f, o, g = torch.split(self.conv_x(x_t) + self.conv_h(h_t), self.num_hidden, 1)
            c = torch.sigmoid(f) * c_t + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c

    items.append((ConvLSTMCell(3, 4, 5, 5, 3, 1, False), "computes something else"))

    class ConvLSTMCell(openstl.ConvLSTMCell):  # uses its conv_last after all
        def forward(self, x_t, h_t, c_t):
            h, c = super().forward(x_t, h_t, c_t)
            return self.conv_last(torch.cat([h, c], 1)), c

    items.append((ConvLSTMCell(3, 4, 5, 5, 3, 1, False), "computes something else"))
    items.append((msrnn_convlstm.ConvLSTM_Cell(4, 6, (1, 5, 5), 3, 1, 1), "input_channel 4 != "))
    mixed = msrnn_convlstm.ConvLSTM_Cell(4, 4, (1, 5, 5), 3, 1, 1)
    mixed._conv_h2h = nn.Conv2d(4, 16, 3, padding=1, bias=False)
    items.append((mixed, "mixed biases"))

    class ConvLSTM_Cell(msrnn_convlstm.ConvLSTM_Cell):  # a forget bias MS-RNN's has not
        def forward(self, x, hiddens):
            h, c = hiddens
            i, f, g, o = torch.chunk(self._conv_x2h(x) + self._conv_h2h(h), 4, dim=1)
            c = torch.sigmoid(f + 1) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            return h, [h, c]

    items.append((ConvLSTM_Cell(4, 4, (1, 5, 5), 3, 1, 1), "computes something else"))
    no_peep = openstl.PhyD_ConvLSTM_Cell((5, 5), 3, 4, (3, 3))
    no_peep.conv = nn.Conv2d(7, 12, 3, padding=1)
    items.append((no_peep, "expected 7 -> 16"))

    class PhyD_ConvLSTM_Cell(openstl.PhyD_ConvLSTM_Cell):  # OpenSTL's gate order i, f, g, o
        def forward(self, x, hidden):
            h, c = hidden
            i, f, g, o = torch.split(self.conv(torch.cat([x, h], 1)), self.hidden_dim, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c

    items.append((PhyD_ConvLSTM_Cell((5, 5), 3, 4, (3, 3)), "computes something else"))

    class SpatioTemporalLSTMCellv2(openstl.SpatioTemporalLSTMCellv2):  # v1's 3 outputs
        def forward(self, x_t, h_t, c_t, m_t):
            return self.gates(x_t, h_t, c_t, m_t)[:3] + (None,)

    items.append((SpatioTemporalLSTMCellv2(3, 4, 5, 5, 3, 1, False), "returns 4 values"))

    class PredRNN_Cell(msrnn_predrnn.PredRNN_Cell):  # m shifted: another function
        def step(self, x, m, hiddens):
            return super().step(x, m + 0.1, hiddens)

    items.append((PredRNN_Cell(4, 4, (1, 5, 5), 3, 1, 1), "computes something else"))
    wide_last = msrnn_predrnn.PredRNN_V2_Cell(4, 4, (1, 5, 5), 3, 1, 1)
    wide_last._conv_c_m = nn.Conv2d(8, 4, 3, padding=1)
    items.append((wide_last, "_conv_c_m has kernel 3, expected 1"))
    biasless = msrnn_predrnn.PredRNN_Cell(4, 4, (1, 5, 5), 3, 1, 1)
    biasless._conv_m2o = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    items.append((biasless, "mixed biases"))
    items.append((msrnn_predrnn.PredRNN_Cell(3, 4, (1, 5, 5), 3, 1, 1), "input_channel 3 != "))
    return items


def test_lookalikes_are_left_alone_and_reported():
    items = _lookalikes()
    assert_lookalikes_reported(items)


def test_probe_cuts_layer_norms_to_its_frame_size():
    """The probe runs a LayerNorm'd cell on 3x4 frames (its copy's LayerNorms cut to that
    size), not on the frame size they fix; the drop-in keeps that size."""
    seen = []

    class ConvLSTMCell(openstl.ConvLSTMCell):
        def forward(self, x_t, h_t, c_t):
            seen.append(tuple(x_t.shape))
            return super().forward(x_t, h_t, c_t)

    model = nn.ModuleList([ConvLSTMCell(16, 32, 16, 16, 5, 1, True)])
    assert fastcells.patch(model) == ["0"]
    assert seen == [(1, 16, 3, 4)] * 2 and model[0].spatial_size == (16, 16)
    x, h, c = torch.randn(2, 16, 16, 16), torch.randn(2, 32, 16, 16), torch.randn(2, 32, 16, 16)
    original = ConvLSTMCell(16, 32, 16, 16, 5, 1, True)
    original.load_state_dict(model[0].state_dict())
    for g, w in zip(model[0](x, h, c), original(x, h, c)):
        assert_close(g, w, 1e-5)
