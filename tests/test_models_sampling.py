"""PredRNN's scheduled sampling, PredRNN-v2's reverse scheduled sampling and decoupling loss,
against their definitions (thuml/predrnn-pytorch run.py and predrnn_v2.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

import fastcells.models as M
from fastcells.models import sampling

from .models_helpers import CHANNELS, one_thread, tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _thuml_eta_after(itr, stop=50000, start=1.0, rate=0.00002):
    """thuml's stateful update, iteration by iteration (run.py ``schedule_sampling``)."""
    eta = start
    for i in range(1, itr + 1):
        eta = eta - rate if i < stop else 0.0
    return eta


@pytest.mark.parametrize("itr", [1, 2, 100, 25000, 49999, 50000, 50001, 80000])
def test_scheduled_sampling_eta_matches_thuml_loop(itr):
    assert sampling.scheduled_sampling_eta(itr) == pytest.approx(_thuml_eta_after(itr),
                                                                 abs=1e-9)


def test_scheduled_sampling_eta_values():
    eta = sampling.scheduled_sampling_eta
    assert eta(1) == pytest.approx(0.99998)
    assert eta(25000) == pytest.approx(0.5)
    assert eta(49999) == pytest.approx(0.00002)
    assert eta(50000) == 0.0
    assert eta(10, sampling_stop_iter=5) == 0.0
    assert eta(10, sampling_start_value=0.5, sampling_changing_rate=0.01) == pytest.approx(0.4)


@pytest.mark.parametrize("itr,r_eta,eta", [
    (0, 0.5, 0.5), (24999, 0.5, 0.5), (25000, 0.5, 0.5),
    (30000, 1 - 0.5 * math.exp(-1), 0.4), (37500, 1 - 0.5 * math.exp(-2.5), 0.25),
    (49999, 1 - 0.5 * math.exp(-24999 / 5000), 0.5 - 0.5 * 24999 / 25000),
    (50000, 1.0, 0.0), (90000, 1.0, 0.0),
])
def test_reverse_sampling_etas(itr, r_eta, eta):
    got = sampling.reverse_sampling_etas(itr)
    assert got == (pytest.approx(r_eta), pytest.approx(eta))


def test_sampling_masks():
    g = torch.Generator().manual_seed(0)
    m = sampling.scheduled_sampling_mask(0.3, batch=4000, input_len=10, total_len=20,
                                         generator=g)
    assert m.shape == (4000, 18)
    assert torch.equal(m[:, :9], torch.ones(4000, 9))
    assert abs(m[:, 9:].mean().item() - 0.3) < 0.01
    assert sampling.scheduled_sampling_mask(0.0, 3, 10, 20)[:, 9:].sum() == 0
    assert sampling.scheduled_sampling_mask(1.0, 3, 10, 20).all()
    r = sampling.reverse_scheduled_sampling_mask(0.8, 0.1, batch=4000, input_len=10,
                                                 total_len=20, generator=g)
    assert r.shape == (4000, 18)
    assert abs(r[:, :9].mean().item() - 0.8) < 0.01
    assert abs(r[:, 9:].mean().item() - 0.1) < 0.01
    a = sampling.reverse_scheduled_sampling_mask(0.5, 0.5, 2, 4, 8,
                                                 generator=torch.Generator().manual_seed(3))
    b = sampling.reverse_scheduled_sampling_mask(0.5, 0.5, 2, 4, 8,
                                                 generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # PredRNN's output-step mask (B, T - T_in - 1) as the full layout
    out = torch.tensor([[1.0, 0.0]])
    assert torch.equal(sampling.full_mask(out, 3), torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="total_len >= input_len \\+ 1"):
        sampling.scheduled_sampling_mask(0.5, 2, 10, 10)


def test_reverse_sampling_mask_drives_input_steps():
    """Under reverse scheduled sampling, input steps may read the model's own prediction."""
    model, (h, w) = tiny("predrnn_v2")
    frames = torch.randn(1, 6, CHANNELS, h, w)
    zeros = torch.zeros(1, 4)
    calls = []
    step = model.step
    model.step = lambda x, s, aux: calls.append(x) or step(x, s, aux)
    with torch.no_grad():
        out = model.forward_train(frames, zeros)
    for t in range(1, 5):
        assert torch.equal(calls[t], out.predictions[:, t - 1])


def _direct_term(dc, dm, weight):
    """Mean over samples and channels of |cos| between the adapted maps, written out."""
    a = torch.einsum("oc,bchw->bohw", weight[:, :, 0, 0], dc).flatten(2).double()
    b = torch.einsum("oc,bchw->bohw", weight[:, :, 0, 0], dm).flatten(2).double()
    cos = (a * b).sum(2) / (a.norm(dim=2) * b.norm(dim=2))
    return cos.abs().mean()


def test_decoupling_term_matches_formula():
    dc, dm = torch.randn(3, 5, 4, 6), torch.randn(3, 5, 4, 6)
    w = torch.randn(5, 5, 1, 1)
    got = M.decoupling_term(dc, dm, w)
    assert got.item() == pytest.approx(_direct_term(dc, dm, w).item(), rel=1e-5)
    assert M.decoupling_term(dc, dc, w).item() == pytest.approx(1.0, rel=1e-5)
    assert M.decoupling_term(dc, -dc, w).item() == pytest.approx(1.0, rel=1e-5)


def test_predrnn_v2_decoupling_loss_is_the_mean_over_steps_and_layers():
    model, (h, w) = tiny("predrnn_v2")
    frames = torch.randn(2, 4, CHANNELS, h, w)
    out = model.forward_train(frames)
    # a hand-written teacher-forced loop over the cells (zigzag m), PredRNN-v2's definition
    terms = []
    n = len(model.cells)
    z = torch.zeros(2, 4, h, w)
    hs, cs, m = [z] * n, [z] * n, z
    for t in range(3):
        x = frames[:, t]
        for i, cell in enumerate(model.cells):
            (hs[i], cs[i], m), (dc, dm) = cell(x, (hs[i], cs[i], m), return_deltas=True)
            terms.append(_direct_term(dc, dm, model.adapter.weight))
            x = hs[i]
    want = torch.stack(terms).mean()
    assert len(terms) == 3 * n
    assert out.losses["decouple"].item() == pytest.approx(want.item(), rel=1e-5)
    mse = F.mse_loss(out.predictions, frames[:, 1:])
    total = model.training_loss(frames)
    assert total.item() == pytest.approx((mse + 0.1 * out.losses["decouple"]).item(), rel=1e-5)
    # the loss trains the adapter
    (grad,) = torch.autograd.grad(out.losses["decouple"], [model.adapter.weight])
    assert grad.abs().sum() > 0
