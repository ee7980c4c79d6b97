"""VDT and its diffusion: the schedule's closed forms, the network against a re-creation of
the official code, mask modelling (input, loss, sampling), DDPM/DDIM, the task masks, the
latent path, presets, profiling and the CLI."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastcells.models as M
from fastcells.cli import main as cli
from fastcells.models.diffusion import GaussianDiffusion, linear_betas, spaced_timesteps
from fastcells.models.vdt import TASKS, VDT, Attention, VDTDenoiser, _call_seed, sincos_2d

from .models_helpers import one_thread  # noqa: F401 (fixture)
from .public import vdt as official

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(frame_channels=2, frame_size=(12, 8), input_len=2, pred_len=3, patch_size=4,
            hidden_size=16, depth=2, num_heads=2, sample_steps=4)


def tiny(**changes) -> VDT:
    """A tiny VDT with every parameter random (the zero-initialised ones included)."""
    model = M.create("vdt", **{**TINY, **changes})
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


# -- the schedule ---------------------------------------------------------------------------
def test_schedule_closed_forms_in_float64():
    d = GaussianDiffusion(num_steps=1000)
    assert d.betas.dtype == torch.float64 and len(d.betas) == 1000
    assert d.betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert d.betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    assert torch.allclose(torch.diff(d.betas), torch.full((999,), (0.02 - 1e-4) / 999,
                                                           dtype=torch.float64))
    assert linear_betas(250)[-1].item() == pytest.approx(0.08)  # rescaled by 1000 / 250
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, 4, dtype=torch.float64, generator=gen)
    t = torch.tensor([0, 1, 17, 500, 999])
    abar = torch.cumprod(1 - d.betas, 0)[t].reshape(-1, 1, 1)
    mean, var, logvar = d.q_mean_variance(x0, t)
    assert torch.allclose(mean, abar.sqrt() * x0, rtol=1e-13, atol=0)
    assert torch.allclose(var, (1 - abar).expand_as(x0), rtol=1e-13, atol=0)
    assert torch.allclose(logvar, torch.log(1 - abar).expand_as(x0), rtol=1e-12, atol=0)

    # q(x_t | x_0): the moments of many draws
    many = x0[:1].expand(40000, 3, 4)
    tt = torch.full((40000,), 300)
    draws = d.q_sample(many, tt, torch.randn(many.shape, dtype=torch.float64, generator=gen))
    a300 = torch.cumprod(1 - d.betas, 0)[300]
    assert torch.allclose(draws.mean(0), a300.sqrt() * x0[0], atol=0.02)
    assert torch.allclose(draws.var(0), (1 - a300).expand(3, 4), rtol=0.05)

    # the posterior q(x_{t-1} | x_t, x_0) by Bayes' rule on the two Gaussians
    x_t = torch.randn(5, 3, 4, dtype=torch.float64, generator=gen)
    t = torch.tensor([1, 2, 17, 500, 999])
    beta = d.betas[t].reshape(-1, 1, 1)
    prev = torch.cumprod(1 - d.betas, 0)[t - 1].reshape(-1, 1, 1)
    precision = 1 / (1 - prev) + (1 - beta) / beta
    want_var = 1 / precision
    want_mean = want_var * (prev.sqrt() * x0 / (1 - prev) + (1 - beta).sqrt() * x_t / beta)
    mean, var, logvar = d.q_posterior_mean_variance(x0, x_t, t)
    assert torch.allclose(mean, want_mean, rtol=1e-10, atol=1e-12)
    assert torch.allclose(var, want_var.expand_as(x0), rtol=1e-10, atol=0)
    assert torch.allclose(logvar, var.log(), rtol=1e-12)
    # at t = 0 the posterior is x_0 itself (its log-variance is clipped to t = 1's)
    mean0, var0, logvar0 = d.q_posterior_mean_variance(x0, x_t, torch.zeros(5, dtype=torch.long))
    assert torch.allclose(mean0, x0, atol=1e-15) and (var0 == 0).all()
    assert torch.allclose(logvar0, d.posterior_variance[1].log().expand_as(x0))

    # x_0 <-> eps are inverse maps of q_sample
    eps = torch.randn(5, 3, 4, dtype=torch.float64, generator=gen)
    xt = d.q_sample(x0, t, eps)
    assert torch.allclose(d.predict_x0_from_eps(xt, t, eps), x0, rtol=1e-10, atol=1e-10)
    assert torch.allclose(d.predict_eps_from_x0(xt, t, x0), eps, rtol=1e-9, atol=1e-9)


def test_respacing_keeps_the_cumulative_products():
    assert spaced_timesteps(1000, 50)[:3] == [0, 20, 41] and spaced_timesteps(1000, 50)[-1] == 999
    assert spaced_timesteps(10, 10) == list(range(10)) and spaced_timesteps(10, 1) == [0]
    d = GaussianDiffusion(num_steps=1000, learn_sigma=True)
    r = d.respaced(50)
    kept = spaced_timesteps(1000, 50)
    assert r.num_steps == 50 and r.timestep_map == kept and r.learn_sigma
    assert torch.allclose(r.alphas_cumprod, d.alphas_cumprod[kept], rtol=1e-13)
    assert d.respaced(1000) is d
    assert r.respaced(50) is r and r.respaced(5).timestep_map == [kept[i] for i in
                                                                  spaced_timesteps(50, 5)]
    for bad in (0, 1001, 2.5, True):
        with pytest.raises(ValueError, match="steps: expected an int in \\[1, 1000\\]"):
            d.respaced(bad)


def test_respacing_picks_the_official_timesteps():
    """The official accumulated-float positions (round(i * stride) picks another timestep
    for 278 of the 999 counts of 1000 steps, e.g. 21: 500 instead of the official 499)."""
    for count in (2, 21, 31, 35, 50, 100, 250, 999):
        assert set(spaced_timesteps(1000, count)) == official.OfficialDiffusion.space(1000, count)
    assert spaced_timesteps(1000, 21)[10] == 499
    differs = [c for c in range(2, 1001)
               if spaced_timesteps(1000, c) != sorted(official.OfficialDiffusion.space(1000, c))]
    assert differs == []
    assert all(len(set(spaced_timesteps(200, c))) == c for c in range(1, 201))  # distinct


def test_ddim_with_eta_1_is_the_posterior_step_and_eta_0_its_mean():
    """DDIM's sigma at eta = 1 is the posterior's standard deviation, and its mean the
    posterior mean given the predicted x_0: one DDIM step equals one posterior draw."""
    d = GaussianDiffusion(num_steps=1000).respaced(20)
    gen = torch.Generator().manual_seed(3)
    x_t, x0 = (torch.randn(4, 6, dtype=torch.float64, generator=gen) for _ in range(2))
    fresh = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    t = torch.tensor([1, 5, 10, 19])
    mean, var, _ = d.q_posterior_mean_variance(x0, x_t, t)
    assert torch.allclose(d._ddim_step(x_t, t, x0, 1.0, fresh), mean + var.sqrt() * fresh,
                          rtol=1e-10, atol=1e-12)
    # eta 0: the deterministic DDIM update sqrt(abar') x0 + sqrt(1 - abar') eps
    eps = d.predict_eps_from_x0(x_t, t, x0)
    abar_prev = d.alphas_cumprod_prev[t].reshape(-1, 1)
    assert torch.allclose(d._ddim_step(x_t, t, x0, 0.0, None),
                          abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps, rtol=1e-12)


def test_variational_bound_is_zero_for_the_true_noise_and_posterior_variance():
    d = GaussianDiffusion(num_steps=100, learn_sigma=True)
    gen = torch.Generator().manual_seed(4)
    x0 = torch.rand(3, 2, 5, dtype=torch.float64, generator=gen) * 2 - 1
    eps = torch.randn(3, 2, 5, dtype=torch.float64, generator=gen)
    t = torch.tensor([3, 50, 99])
    x_t = d.q_sample(x0, t, eps)
    low = -torch.ones_like(x0)  # v = -1: the posterior's (clipped) variance
    assert torch.allclose(d.vb_terms_bpd(eps, low, x0, x_t, t),
                          torch.zeros(3, dtype=torch.float64), atol=1e-9)
    early = torch.tensor([1, 2, 3])  # where beta_t and the posterior variance differ most
    x_early = d.q_sample(x0, early, eps)
    assert (d.vb_terms_bpd(eps, -low, x0, x_early, early) > 1e-3).all()  # another variance
    assert (d.vb_terms_bpd(eps + 0.1, low, x0, x_t, t) > 1e-6).all()  # another mean
    # at t = 0 the term is the decoder's negative log-likelihood of 256-level data, in bits
    zero = torch.zeros(3, dtype=torch.long)
    nll = d.vb_terms_bpd(eps, low, x0, d.q_sample(x0, zero, eps), zero)
    assert ((nll > 0) & (nll < 9)).all()


# -- the network ------------------------------------------------------------------------------
def test_sdpa_attention_equals_explicit_softmax_attention():
    attn = Attention(12, 3).double()
    x = torch.randn(2, 5, 7, 12, dtype=torch.float64)
    ref = official.TimmAttention(12, 3).double()
    ref.load_state_dict(attn.state_dict())
    assert torch.allclose(attn(x), ref(x.reshape(10, 7, 12)).reshape(2, 5, 7, 12), rtol=1e-12,
                          atol=1e-12)


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_denoiser_matches_the_official_layout(learn_sigma):
    net = VDTDenoiser(3, (12, 8), num_frames=5, patch_size=4, hidden_size=16, depth=2,
                      num_heads=2, learn_sigma=learn_sigma).double()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.3)
    ref = official.OfficialVDT(3, (12, 8), 4, 16, 2, 2, 5, learn_sigma).double()
    ref.load_fastcells(net)
    x = torch.randn(2, 5, 3, 12, 8, dtype=torch.float64, generator=gen)
    t = torch.tensor([3, 917])
    out = net(x, t)
    assert out.shape == (2, 5, 6 if learn_sigma else 3, 12, 8)
    assert torch.allclose(out, ref(x, t), rtol=1e-10, atol=1e-10)
    # the fixed embeddings are MAE's tables
    assert torch.allclose(sincos_2d(16, 3, 2).float(),
                          torch.from_numpy(official.mae_2d(16, 3, 2)).float())


def test_zero_initialisation_and_gradcheck():
    model = M.create("vdt", **TINY)
    den = model.denoiser
    for layer in [b.adaLN_modulation[-1] for b in den.blocks] + [den.final_modulation[-1],
                                                                  den.final_linear]:
        assert (layer.weight == 0).all() and (layer.bias == 0).all()
    x = torch.randn(2, 5, 2, 12, 8)
    assert (den(x, torch.tensor([0, 999])) == 0).all()  # the first prediction is 0
    net = VDTDenoiser(1, (4, 4), num_frames=2, patch_size=2, hidden_size=8, depth=1,
                      num_heads=2).double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(1, 2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: net(v, torch.tensor([7])), (x,), eps=1e-6,
                                    atol=1e-6, nondet_tol=0)


# -- mask modelling --------------------------------------------------------------------------
def test_training_input_keeps_given_positions_clean_and_loss_counts_masked_only():
    model = tiny(task_probs={"spatial": 1.0, "predict": 1.0}, num_frames=8)
    frames = torch.rand(4, 8, 2, 12, 8)
    seen = {}
    model.denoiser.register_forward_hook(lambda m, args, out: seen.update(x=args[0], out=out))
    torch.manual_seed(7)
    out = model.forward_train(frames)
    torch.manual_seed(7)  # the same draws: masks first, then timesteps and noise
    mask = model.draw_masks(4)
    t = torch.randint(1000, (4,))
    noise = torch.randn(4, 8, 2, 12, 8)
    x0 = frames * 2 - 1
    assert 0 < mask.mean() < 1
    x_t = model.diffusion.q_sample(x0, t, noise)
    assert torch.equal(seen["x"], x0 * (1 - mask) + x_t * mask)  # given positions clean
    assert torch.equal(out.targets, noise * mask)
    assert torch.equal(out.predictions, seen["out"] * mask)
    assert out.losses == {}
    # the loss's gradient reaches the network's output at masked positions only
    seen["out"].retain_grad()
    F.mse_loss(out.predictions, out.targets).backward()
    grad = seen["out"].grad
    assert (grad * (1 - mask) == 0).all() and (grad * mask != 0).any()
    # and it is the official masked mean: sum over masked positions / all positions
    want = ((seen["out"] - noise) ** 2 * mask).mean()
    assert torch.allclose(F.mse_loss(out.predictions, out.targets), want)


def test_learned_variance_adds_the_bound_which_trains_the_variance_only():
    model = tiny(learn_sigma=True, num_frames=5)
    frames = torch.rand(2, 5, 2, 12, 8)
    seen = {}
    model.denoiser.register_forward_hook(lambda m, args, out: seen.update(out=out))
    out = model.forward_train(frames)
    assert set(out.losses) == {"vb"} and math.isfinite(out.losses["vb"].item())
    assert out.predictions.shape == frames.shape
    seen["out"].retain_grad()
    out.losses["vb"].backward(retain_graph=True)
    eps_grad, var_grad = seen["out"].grad.chunk(2, dim=2)
    assert (eps_grad == 0).all() and (var_grad != 0).any()
    seen["out"].grad = None
    F.mse_loss(out.predictions, out.targets).backward()
    eps_grad, var_grad = seen["out"].grad.chunk(2, dim=2)
    assert (var_grad == 0).all() and (eps_grad != 0).any()
    assert torch.isfinite(model.training_loss(frames))


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.5)])
def test_given_positions_unchanged_through_sampling(sampler, eta):
    model = tiny(num_frames=6, learn_sigma=sampler == "ddpm")
    frames = torch.rand(2, 6, 2, 12, 8)
    gen = torch.Generator().manual_seed(2)
    mask = torch.cat([model.task_mask("spatial", 1, gen), model.task_mask("interpolate", 1)])
    assert 0 < mask[0].mean() < 1
    x0 = model.encode(frames)
    steps = model.generate_latent(x0, mask, steps=5, sampler=sampler, eta=eta, generator=gen,
                                  progressive=True)
    assert len(steps) == 5
    for x in steps:
        assert torch.equal(x * (1 - mask), x0 * (1 - mask))
    out = model.generate(frames, mask, steps=5, sampler=sampler, eta=eta, generator=gen)
    assert torch.equal(out * (1 - mask), frames * (1 - mask))  # exactly the given frames
    assert not torch.allclose(out * mask, frames * mask)


@pytest.mark.parametrize("sampler,eta,learn_sigma", [("ddpm", 0.0, False), ("ddpm", 0.0, True),
                                                     ("ddim", 0.0, False), ("ddim", 0.7, True)])
def test_samplers_match_the_official_steps(sampler, eta, learn_sigma):
    """Our respaced DDPM/DDIM loop against the official sampler's step equations (float64),
    with the same initial and fresh noise; the official code keeps evolving the given
    positions (only the model input replaces them), so the masked positions are compared."""
    model = tiny(num_frames=4, learn_sigma=learn_sigma).double()
    frames = torch.rand(2, 4, 2, 12, 8, dtype=torch.float64)
    mask = model.task_mask("predict", 2).double()
    x0 = model.encode(frames)
    ours = model.generate_latent(x0, mask, steps=6, sampler=sampler, eta=eta,
                                 generator=torch.Generator().manual_seed(9))
    ref = official.OfficialDiffusion(1000, respacing=6, learn_sigma=learn_sigma)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    for i in reversed(range(6)):
        fresh = torch.randn(x.shape, generator=gen, dtype=torch.float64) \
            if i > 0 and (sampler == "ddpm" or eta > 0) else torch.zeros_like(x)
        x = ref.step(model.denoiser, x, i, x0, mask, sampler, eta, fresh, clip=True)
    assert torch.allclose(ours * mask, x * mask, rtol=1e-10, atol=1e-10)


def test_ddim_eta_0_is_deterministic_and_ddpm_follows_its_seed():
    model = tiny(num_frames=5)
    given = torch.rand(2, 2, 2, 12, 8)

    def run(seed, **kw):
        return model.sample(given, 3, generator=torch.Generator().manual_seed(seed), **kw)

    a, b = run(0, sampler="ddim", eta=0.0, steps=4), run(0, sampler="ddim", eta=0.0, steps=4)
    assert torch.equal(a, b)
    assert not torch.allclose(a, run(1, sampler="ddim", eta=0.0, steps=4))  # another x_T
    assert torch.equal(run(0, sampler="ddpm", steps=4), run(0, sampler="ddpm", steps=4))
    assert not torch.allclose(run(0, sampler="ddpm", steps=4), run(0, sampler="ddim", steps=4))
    # forward: the model's defaults, noise seeded by (sample_seed, calls since a reset); the
    # global RNG is left alone
    state = torch.get_rng_state()
    first, second = model(given), model(given)  # a new model starts reset
    assert first.shape == (2, 3, 2, 12, 8) and not torch.allclose(first, second)
    model.reset_sampling()
    assert torch.equal(model(given), first) and torch.equal(model(given), second)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, run(_call_seed(0, 0))) and torch.equal(second, run(_call_seed(0, 1)))
    assert len({_call_seed(seed, call) for seed in range(20) for call in range(20)}) == 400


def test_evaluation_gives_each_batch_new_noise_and_repeats(tmp_path):
    """evaluate_model resets the sampling noise: batches of the same frames get different
    samples (not one noise for every batch, which correlates the samples and biases FVD),
    and evaluating again gives the same samples and metrics."""
    from fastcells.train import evaluate_model, write_predictions

    model = tiny(num_frames=5, frame_size=(16, 12))  # SSIM's window needs 11x11
    sequence = torch.rand(5, 2, 16, 12)
    samples, sample = [], model.sample
    model.sample = lambda *a, **k: samples.append(sample(*a, **k)) or samples[-1]
    first = evaluate_model(model, [sequence] * 3, 2, 3, 1, "cpu")
    assert len(samples) == 3
    assert not torch.allclose(samples[0], samples[1]) and not torch.allclose(samples[1],
                                                                              samples[2])
    model(sequence[None, :2])  # whatever ran in between
    again = evaluate_model(model, [sequence] * 3, 2, 3, 1, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(samples[:3], samples[4:]))
    assert again == first
    # fastcells predict: reset for the first sequence, then new noise for each
    for i in range(3):
        write_predictions(model, sequence, 2, 3, "cpu", str(tmp_path), name=f"seq_{i}",
                          reset=i == 0)
    assert [torch.equal(a, b) for a, b in zip(samples[7:], samples[:3])] == [True] * 3


def test_long_rollouts_run_clip_by_clip():
    model = tiny(num_frames=4)  # input_len 2: each clip adds 2 frames
    calls = []
    model.denoiser.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    given = torch.rand(1, 3, 2, 12, 8)
    out = model.sample(given, 5, steps=2)
    assert out.shape == (1, 5, 2, 12, 8)
    assert len(calls) == 3 * 2 and all(s == (1, 4, 2, 12, 8) for s in calls)
    one = model.sample(given[:, :1], 1, steps=2)  # one given frame: a clip of 1 + 3
    assert one.shape == (1, 1, 2, 12, 8)


def test_task_masks():
    model = tiny(num_frames=10, input_len=3, pred_len=7, frame_size=(32, 24))
    gen = torch.Generator().manual_seed(0)

    def frames_of(task):
        m = model.task_mask(task, 2, gen)
        assert m.shape == (2, 10, 1, 32, 24) and ((m == 0) | (m == 1)).all()
        return m

    per_frame = {task: frames_of(task)[:, :, 0, 0, 0] for task in TASKS if task != "spatial"}
    assert per_frame["predict"][0].tolist() == [0] * 3 + [1] * 7
    assert per_frame["backward"][0].tolist() == [1] * 7 + [0] * 3
    assert per_frame["interpolate"][0].tolist() == [0, 1, 1, 1, 0, 1, 1, 1, 0, 1]
    assert (per_frame["unconditional"] == 1).all()
    assert (per_frame["single_frame"].sum(1) == 9).all()
    for task in ("random_frames", "single_frame"):  # constant over each frame
        m = model.task_mask(task, 3, gen)
        assert (m == m[..., :1, :1]).all()
    rates = model.task_mask("random_frames", 200, gen)[:, :, 0, 0, 0].mean()
    assert 0.75 < rates < 0.85  # mlm_ratio 0.8
    spatial = model.task_mask("spatial", 50, gen)
    cells = spatial[:, :, 0, ::4, ::4]  # patch-aligned blocks: constant within each 4x4 patch
    assert torch.equal(spatial[:, :, 0], cells.repeat_interleave(4, 2).repeat_interleave(4, 3))
    covered = spatial.amax(dim=(2, 3, 4))  # the frames it touches: s .. T - e, s, e in 0..3
    assert covered[:, 4:6].all() and (spatial.mean(dim=(2, 3, 4))[covered > 0] <= 0.5).all()
    # draws per sample, by task_probs
    model = tiny(num_frames=10, task_probs={"predict": 3, "unconditional": 1}, frame_size=16)
    draws = model.draw_masks(400, gen)[:, :, 0, 0, 0]
    share = (draws[:, 0] == 0).float().mean()
    assert 0.68 < share < 0.82 and ((draws == 1).all(1) | (draws[:, 0] == 0)).all()


def test_spatial_task_refuses_grids_where_no_block_fits():
    """BEiT's blocks are strictly smaller than the grid and cover about spatial_mask_ratio
    of it: with a grid side of one patch, or a target under one patch, every spatial mask
    would be empty (zero loss), so construction refuses it while the task is drawn. On a
    small grid where blocks fit, an empty draw is drawn again."""
    for changes, grid in (({"frame_size": (16, 8), "patch_size": 8}, "2x1"),
                          ({"frame_size": (4, 16), "patch_size": 4}, "1x4"),
                          ({"spatial_mask_ratio": 0.1}, "3x2")):
        with pytest.raises(ValueError, match=f"task_probs: the 'spatial' task .* this {grid} "
                                             f"grid .* none fits"):
            M.create("vdt", **{**TINY, **changes})
        with pytest.raises(ValueError, match="none fits"):
            M.create("vdt", **{**TINY, **changes}, task_probs={"spatial": 1, "predict": 1})
        M.create("vdt", **{**TINY, **changes}, task_probs={"predict": 1, "backward": 1})
    # a 3x2 grid: one BEiT draw in two fits no block; 10 frames: s .. T - e is never empty
    small = M.create("vdt", **TINY, num_frames=10)
    masks = small.task_mask("spatial", 200, torch.Generator().manual_seed(0))
    assert (masks.sum(dim=(1, 2, 3, 4)) > 0).all()


# -- latent diffusion -------------------------------------------------------------------------
class TinyAutoencoder(nn.Module):
    """2x down, 3 latent channels; decode is a fixed upsampling of a 1x1 convolution."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(2, 3, 2, stride=2)
        self.dec = nn.Conv2d(3, 2, 1)
        self.drop = nn.Dropout(0.5)

    def encode(self, x):
        return self.enc(self.drop(x))

    def decode(self, z):
        return F.interpolate(self.dec(z), scale_factor=2.0)


def test_latent_space_of_a_given_autoencoder():
    ae = TinyAutoencoder()
    before = {k: v.clone() for k, v in ae.state_dict().items()}
    model = M.create("vdt", **{**TINY, "frame_size": (16, 8), "patch_size": 2},
                     autoencoder=ae, latent_scale=0.5)
    assert model.latent_channels == 3 and model.latent_size == (8, 4)
    assert not model.clip_denoised and not ae.training
    model.train()
    assert not ae.training  # frozen: stays in eval mode
    frames = torch.rand(2, 5, 2, 16, 8)
    assert torch.allclose(model.encode(frames), 0.5 * ae.enc(frames.reshape(10, 2, 16, 8))
                          .reshape(2, 5, 3, 8, 4))
    model.training_loss(frames).backward()
    assert all(p.grad is None for p in ae.parameters())
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert all(torch.equal(v, ae.state_dict()[k]) for k, v in before.items())
    assert model.task_mask("spatial", 1).shape == (1, 5, 1, 8, 4)
    assert model(frames[:, :2]).shape == (2, 3, 2, 16, 8)
    with pytest.raises(TypeError, match="autoencoder: expected an object with encode"):
        M.create("vdt", **TINY, autoencoder=nn.Linear(2, 2))


def test_the_frozen_autoencoder_is_not_part_of_the_model_state():
    """The user's frozen autoencoder is in neither state_dict() nor parameters(): a
    checkpoint holds the denoiser and loads strictly into a model built with the same
    autoencoder (as the trainer and CLI rebuild it); it moves and casts with the model,
    and copies (the EMA's) share it. Legacy state dicts with its keys still load."""
    import copy

    ae = TinyAutoencoder()
    config = {**TINY, "frame_size": (16, 8), "patch_size": 2}
    model = M.create("vdt", **config, autoencoder=ae)
    assert not [k for k in model.state_dict() if k.startswith("autoencoder")]
    assert not {id(p) for p in ae.parameters()} & {id(p) for p in model.parameters()}
    assert M.count_params(model) == M.count_params(model.denoiser)
    assert model.autoencoder is ae and copy.deepcopy(model).autoencoder is ae
    fresh = M.create("vdt", **config, autoencoder=TinyAutoencoder())
    fresh.load_state_dict(model.state_dict())  # strict
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))
    legacy = {**model.state_dict(), **{f"autoencoder.{k}": v for k, v in ae.state_dict().items()}}
    fresh.load_state_dict(legacy)
    model.double()
    assert ae.enc.weight.dtype == torch.float64 and model._like().dtype == torch.float64
    assert model(torch.rand(1, 2, 2, 16, 8, dtype=torch.float64)).dtype == torch.float64


class ScriptableAutoencoder(nn.Module):
    """A TorchScript-able autoencoder: 2x down to 3 latent channels, 1x1 and 2x up back."""

    def __init__(self, channels: int = 1):
        super().__init__()
        self.enc = nn.Conv2d(channels, 3, 2, stride=2)
        self.dec = nn.Conv2d(3, channels, 1)

    @torch.jit.export
    def encode(self, x):
        return self.enc(x)

    @torch.jit.export
    def decode(self, z):
        return F.interpolate(self.dec(z), scale_factor=2.0)

    def forward(self, x):
        return self.decode(self.encode(x))


def test_autoencoder_from_a_torchscript_file(tmp_path):
    path = str(tmp_path / "ae.pt")
    ae = ScriptableAutoencoder(2)
    torch.jit.save(torch.jit.script(ae), path)
    model = M.create("vdt", **{**TINY, "frame_size": (16, 8), "patch_size": 2},
                     autoencoder=path, latent_scale=0.5)
    frames = torch.rand(2, 5, 2, 16, 8)
    assert model.latent_channels == 3 and model.latent_size == (8, 4)
    assert torch.allclose(model.encode(frames), 0.5 * ae.encode(frames.flatten(0, 1))
                          .reshape(2, 5, 3, 8, 4), atol=1e-6)
    assert not model.autoencoder.training and not any(
        p.requires_grad for p in model.autoencoder.parameters())
    with pytest.raises(FileNotFoundError, match="autoencoder: file .*missing.pt"):
        M.create("vdt", **TINY, autoencoder=str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="autoencoder: .*junk.pt' is not a TorchScript"):
        M.create("vdt", **TINY, autoencoder=str(tmp_path / "junk.pt"))
    torch.jit.save(torch.jit.script(nn.Conv2d(2, 3, 1)), str(tmp_path / "conv.pt"))
    with pytest.raises(TypeError, match="autoencoder: expected an object with encode"):
        M.create("vdt", **TINY, autoencoder=str(tmp_path / "conv.pt"))


# -- presets, profiling, inputs, errors -------------------------------------------------------
def test_presets_and_shapes():
    assert "vdt" in M.list_models()
    assert M.list_presets("vdt") == ["mmnist", "vdt_s2", "vdt_l2"]
    model = M.create("vdt", preset="mmnist").eval()
    assert (model.frame_size, model.num_frames, model.frame_channels) == ((64, 64), 20, 1)
    x = torch.rand(1, 20, 1, 64, 64)
    assert model.forward_train(x).predictions.shape == x.shape
    assert model.sample(x[:, :10], 2, steps=1).shape == (1, 2, 1, 64, 64)
    with torch.device("meta"):  # the published sizes, without allocating them
        s2, l2 = M.create("vdt", preset="vdt_s2"), M.create("vdt", preset="vdt_l2")
    for m, (d, depth, heads) in ((s2, (384, 12, 6)), (l2, (1152, 28, 16))):
        blocks = m.denoiser.blocks
        assert (len(blocks), blocks[0].attn.num_heads, m.denoiser.patch_size) == (depth, heads, 2)
        assert blocks[0].temporal_fc.in_features == d and m.num_frames == 16
        # per block: 2 attentions (4D^2 + 4D), temporal_fc, temporal LayerNorm, MLP (8D^2 +
        # 5D), adaLN (6D^2 + 6D); embeddings and the final layer (6 = 2 x 3 output channels)
        per_block = 2 * (4 * d * d + 4 * d) + d * d + d + 2 * d + 8 * d * d + 5 * d \
            + 6 * d * d + 6 * d
        rest = (3 * 4 * d + d) + (256 * d + d + d * d + d) + (2 * d * d + 2 * d) \
            + (d * 4 * 6 + 4 * 6)
        assert M.count_params(m) == depth * per_block + rest
    assert M.preset_config("vdt", "vdt_l2")["learn_sigma"] is True


def test_profile_counts_one_denoising_step_with_attention():
    pytest.importorskip("fvcore")
    from fvcore.nn import FlopCountAnalysis

    from fastcells.models.profile import _sdpa_flops

    attn = Attention(8, 2)

    class Explicit(nn.Module):  # the same attention as two matmuls, which fvcore counts
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, x):
            q, k, v = attn.qkv(x).reshape(5, 3, 2, 4).permute(1, 2, 0, 3).unbind(0)
            w = (q @ k.transpose(-1, -2) / 2).softmax(-1)
            return attn.proj((w @ v).transpose(0, 1).reshape(5, 8))

    x = torch.randn(1, 5, 8)
    assert torch.allclose(Explicit()(x[0]), attn(x)[0], atol=1e-6)
    sdpa = FlopCountAnalysis(attn, (x,)).set_op_handle(
        "aten::scaled_dot_product_attention", _sdpa_flops)
    explicit = FlopCountAnalysis(Explicit(), (x[0],))
    for a in (sdpa, explicit):
        a.unsupported_ops_warnings(False)
    assert sdpa.total() == explicit.total() == 5 * 8 * 24 + 2 * 5 * 5 * 8 + 5 * 8 * 8
    # one denoiser call on one clip of num_frames = 5 frames, whatever the given length:
    # TINY has 3x2 patches of 4x4x2 values per frame, width 16, depth 2
    d, n, t, depth, patch = 16, 6, 5, 2, 4 * 4 * 2
    tokens = n * t
    per_block = (tokens * 17 * d * d            # qkv, proj (x2), temporal_fc, MLP
                 + n * t * t * 2 * d + t * n * n * 2 * d  # temporal and spatial attention
                 + tokens * d * (5 + 4 + 4))     # LayerNorms (fvcore: 5 or 4 per element)
    want = (tokens * d * patch + 256 * d + d * d + depth * 6 * d * d + 2 * d * d
            + depth * per_block + tokens * d * 4 + tokens * d * patch)
    model = M.create("vdt", **TINY)
    assert M.profile(model, (1, 2, 2, 12, 8))["flops"] == want
    assert M.profile(model, (1, 4, 2, 12, 8), pred_len=9)["flops"] == want


def test_non_contiguous_and_channels_last_inputs():
    model = tiny(num_frames=5)
    frames = torch.rand(2, 5, 2, 12, 8)
    variants = [frames.transpose(3, 4).contiguous().transpose(3, 4),          # W-major
                frames.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)]  # C last
    torch.manual_seed(0)
    want = model.training_loss(frames)
    for v in variants:
        assert not v.is_contiguous()
        torch.manual_seed(0)
        assert torch.allclose(model.training_loss(v), want, rtol=1e-6)
        model.reset_sampling()
        got = model(v[:, :2])
        model.reset_sampling()
        assert torch.allclose(got, model(frames[:, :2]), atol=1e-6)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="frame_size: VDT's position embeddings are fixed"):
        M.create("vdt", frame_channels=1)
    with pytest.raises(ValueError, match="num_frames: the clip must hold"):
        M.create("vdt", **TINY, num_frames=2)
    with pytest.raises(ValueError, match="sampler: expected one of"):
        M.create("vdt", **TINY, sampler="euler")
    with pytest.raises(ValueError, match="sample_steps: at most diffusion_steps=100"):
        M.create("vdt", **{**TINY, "sample_steps": 200}, diffusion_steps=100)
    with pytest.raises(ValueError, match="diffusion_steps: the linear schedule needs >= 20"):
        M.create("vdt", **TINY, diffusion_steps=10)
    with pytest.raises(ValueError, match="patch_size: the denoiser's input size 12x8"):
        M.create("vdt", **{**TINY, "patch_size": 5})
    with pytest.raises(ValueError, match="num_heads: hidden_size=16 must be divisible"):
        M.create("vdt", **{**TINY, "num_heads": 3})
    with pytest.raises(ValueError, match="task_probs: unknown task"):
        M.create("vdt", **TINY, task_probs={"predcit": 1})
    with pytest.raises(ValueError, match="task_probs: at least one"):
        M.create("vdt", **TINY, task_probs={"predict": 0})
    with pytest.raises(TypeError, match="num_frames: expected an int"):
        M.create("vdt", **TINY, num_frames="8")
    with pytest.raises(TypeError, match="learn_sigma: expected true or false, got 'yes'"):
        M.create("vdt", **TINY, learn_sigma="yes")
    with pytest.raises(TypeError, match="clip_denoised: expected true, false or None"):
        M.create("vdt", **TINY, clip_denoised=1)
    with pytest.raises(ValueError, match="sample_seed: expected an int >= 0"):
        M.create("vdt", **TINY, sample_seed=-1)
    model = tiny()
    with pytest.raises(ValueError, match="mask: VDT draws its own task masks"):
        model.forward_train(torch.rand(1, 5, 2, 12, 8), torch.ones(1, 3))
    with pytest.raises(ValueError, match="frames: VDT trains on clips of num_frames = 5"):
        model.forward_train(torch.rand(1, 4, 2, 12, 8))
    with pytest.raises(ValueError, match="task: expected one of"):
        model.task_mask("inpaint")
    with pytest.raises(ValueError, match="mask: expected shape \\(1, 5\\)"):
        model.generate(torch.rand(1, 5, 2, 12, 8), torch.ones(1, 4))
    with pytest.raises(ValueError, match="mask: expected values 0"):
        model.generate(torch.rand(1, 5, 2, 12, 8), torch.full((1, 5), 0.5))
    with pytest.raises(ValueError, match="steps: expected an int in"):
        model.sample(torch.rand(1, 2, 2, 12, 8), 2, steps=0)
    with pytest.raises(ValueError, match="given: .*expected"):
        model.sample(torch.rand(1, 2, 3, 12, 8), 2)


def test_trainer_refuses_frame_losses_on_noise_predictions(tmp_path):
    from fastcells.train import TrainConfig, Trainer

    base = dict(model="vdt", preset="mmnist", num_sequences=8, batch_size=2, steps=1,
                model_args={"frame_size": 32, "patch_size": 8, "hidden_size": 8, "depth": 1,
                            "num_heads": 2, "input_len": 2, "pred_len": 2})
    for losses, named in (({"l1_weight": 0.5}, "l1_weight=0.5"),
                          ({"temporal_weight": 0.1}, "temporal_weight=0.1"),
                          ({"l1_weight": 1.0, "temporal_weight": 0.2},
                           "l1_weight=1.0, temporal_weight=0.2")):
        cfg = TrainConfig(**base, **losses, out_dir=str(tmp_path / "run"))
        with pytest.raises(ValueError, match=f"{named}: vdt trains on its diffusion loss"):
            Trainer(cfg, progress=False)


def test_cli_train_resume_eval_predict(tmp_path):
    out = str(tmp_path / "vdt")
    args = ["train", "--model", "vdt", "--preset", "mmnist", "--model-arg", "frame_size=32",
            "--model-arg", "patch_size=8", "--model-arg", "hidden_size=8", "--model-arg",
            "depth=1", "--model-arg", "num_heads=2", "--model-arg", "sample_steps=2",
            "--model-arg", 'task_probs={"predict": 1, "spatial": 1}', "--model-arg",
            "input_len=2", "--model-arg", "pred_len=2", "--num-sequences", "12", "--batch-size",
            "4", "--steps", "4", "--eval-every", "2", "--checkpoint-every", "2",
            "--eval-batches", "1"]
    assert cli(args + ["--out", str(tmp_path / "straight")]) == 0
    assert cli(args + ["--steps", "2", "--out", out]) == 0
    assert cli(args + ["--resume", "--out", out]) == 0  # continues to step 4

    def records(name):
        with open(os.path.join(name, "train.jsonl")) as f:
            return [json.loads(line) for line in f]

    assert [r["step"] for r in records(out)] == [1, 2, 3, 4]
    assert [r["loss"] for r in records(out)] == [r["loss"] for r in records(tmp_path / "straight")]
    for name in ("last.pt", "val.jsonl", "predictions.gif", "loss_curves.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    ckpt = os.path.join(out, "last.pt")
    assert cli(["eval", "--checkpoint", ckpt, "--batch-size", "2", "--batches", "1"]) == 0
    result = json.load(open(os.path.join(out, "eval.json")))
    assert len(result["ssim_curve"]) == 2 and math.isfinite(result["mse_per_frame"])
    assert cli(["predict", "--checkpoint", ckpt, "--num", "1", "--out", str(tmp_path / "p")]) == 0
    assert sorted(os.listdir(tmp_path / "p")) == ["sequence_000.gif", "sequence_000.png"]


def test_cli_latent_run_with_an_autoencoder_file_and_other_lengths(tmp_path):
    """--model-arg autoencoder=PATH: train, resume, eval and predict rebuild the latent model
    from the run's config, the checkpoint holds no autoencoder weights; eval and predict
    take other lengths than the run's (1 given -> 5 predicted: two clips)."""
    ae_path = str(tmp_path / "ae.pt")
    torch.jit.save(torch.jit.script(ScriptableAutoencoder(1)), ae_path)
    out = str(tmp_path / "latent")
    args = ["train", "--model", "vdt", "--preset", "mmnist", "--model-arg", "frame_size=32",
            "--model-arg", f"autoencoder={ae_path}", "--model-arg", "patch_size=4",
            "--model-arg", "hidden_size=8", "--model-arg", "depth=1", "--model-arg",
            "num_heads=2", "--model-arg", "sample_steps=2", "--model-arg", "input_len=2",
            "--model-arg", "pred_len=2", "--num-sequences", "12", "--batch-size", "4",
            "--eval-every", "2", "--checkpoint-every", "2", "--eval-batches", "1", "--out", out]
    assert cli(args + ["--steps", "2"]) == 0
    assert cli(args + ["--steps", "3", "--resume"]) == 0
    saved = torch.load(os.path.join(out, "last.pt"), weights_only=False)
    assert saved["step"] == 3 and not [k for k in saved["model"] if "autoencoder" in k]
    assert saved["config"]["model_args"]["autoencoder"] == ae_path
    ckpt = os.path.join(out, "last.pt")
    assert cli(["eval", "--checkpoint", ckpt, "--batch-size", "2", "--batches", "1",
                "--input-len", "1", "--pred-len", "5"]) == 0
    result = json.load(open(os.path.join(out, "eval.json")))
    assert (result["input_len"], result["pred_len"], len(result["ssim_curve"])) == (1, 5, 5)
    assert cli(["predict", "--checkpoint", ckpt, "--num", "1", "--pred-len", "3", "--out",
                str(tmp_path / "p")]) == 0
    assert sorted(os.listdir(tmp_path / "p")) == ["sequence_000.gif", "sequence_000.png"]
