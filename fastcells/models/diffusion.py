"""Gaussian diffusion for the zoo's diffusion models (VDT): the noise schedule and its closed
forms, the masked training objective, and the DDPM (ancestral) and DDIM samplers, written
from the equations of Ho et al. 2020 (DDPM), Nichol & Dhariwal 2021 (learned variance,
respacing) and Song et al. 2021 (DDIM), following the conventions of the official VDT code
(RERV/VDT ``diffusion/``, itself from OpenAI's improved-diffusion via DiT):

- a linear beta schedule from 1e-4 to 0.02 over 1000 steps (rescaled by 1000 / steps for
  other step counts), the schedule kept in float64;
- the model predicts the noise (epsilon); with ``learn_sigma`` it also predicts a value
  ``v`` in [-1, 1] per element, and the reverse variance is
  ``exp((v + 1) / 2 * log(beta_t) + (1 - v) / 2 * log(posterior variance))`` ("learned
  range"), trained by the variational bound (``vb``, in bits per dimension) on a detached
  mean so that it does not move the mean's training; without it the reverse variance is
  fixed to beta_t ("fixed large", the posterior variance at t = 0);
- sampling with fewer steps "respaces" the schedule: ``steps`` timesteps evenly spread over
  0..T-1 (both ends kept), with the betas that give the same cumulative products; the
  network still sees the original timestep indices.

Unified mask modelling (VDT): a mask of ones (positions to generate) and zeros (given
positions) selects what the model generates. Its input is ``x0 * (1 - mask) + x_t * mask``
(given positions clean), the loss counts masked positions only, and sampling puts the
given values back at every step, so they come out unchanged.

Tensors may have any layout (the batch first); a mask broadcasts against them. ``t`` is a
(B,) long tensor of timestep indices, 0-based (t = 0 is one step of noise).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

SAMPLERS = ("ddpm", "ddim")
SCHEDULES = ("linear",)


def linear_betas(num_steps: int) -> Tensor:
    """The DDPM linear schedule (1e-4 .. 0.02 at 1000 steps), rescaled for other lengths so
    that the total noise stays comparable (improved-diffusion's ``linear``), float64."""
    scale = 1000.0 / num_steps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64, device="cpu")


def spaced_timesteps(num_steps: int, count: int) -> list[int]:
    """``count`` timesteps evenly spread over 0..num_steps-1, both ends included (the
    official code's ``space_timesteps(T, [count])``)."""
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= num_steps:
        raise ValueError(f"steps: expected an int in [1, {num_steps}] (the diffusion's steps), "
                         f"got {count!r}")
    if count == 1:
        return [0]
    stride = (num_steps - 1) / (count - 1)
    # the official form: a float position accumulated stride by stride, then rounded. Its
    # rounding error differs from round(i * stride)'s, which picks another timestep for
    # 278 of the 999 counts of a 1000-step process (e.g. 21, 31, 35).
    steps, position = [], 0.0
    for _ in range(count):
        steps.append(round(position))
        position += stride
    return steps


def _normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x) of data quantised to 256 levels in [-1, 1] under N(mean, exp(log_scale)^2):
    the decoder term of the bound at t = 0 (the edge bins extend to +-infinity)."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def masked_mean_flat(x: Tensor, mask: Tensor | None) -> Tensor:
    """Per-sample mean of ``x * mask`` over all non-batch elements (the official code's
    ``mean_flat`` of the masked term: unmasked positions count as zeros)."""
    if mask is not None:
        x = x * mask
    return x.reshape(x.shape[0], -1).mean(dim=1)


class GaussianDiffusion:
    """A discrete Gaussian diffusion with ``len(betas)`` steps.

    Args:
        betas: 1-D schedule in (0, 1] (default: :func:`linear_betas` of ``num_steps``).
        num_steps: steps of the default schedule (VDT: 1000).
        learn_sigma: the model also outputs the variance interpolation ``v`` (see module doc).
        timestep_map: the original timestep index of each step (set by :meth:`respaced`; the
            network is called with these).
    """

    def __init__(self, betas: Tensor | None = None, num_steps: int = 1000,
                 learn_sigma: bool = False, timestep_map: list[int] | None = None):
        if betas is None:
            if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
                raise ValueError(f"num_steps: expected an int >= 1, got {num_steps!r}")
            betas = linear_betas(num_steps)
        betas = torch.as_tensor(betas, dtype=torch.float64, device="cpu")
        if betas.dim() != 1 or len(betas) < 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas: expected a non-empty 1-D schedule with values in (0, 1]")
        self.betas = betas
        self.num_steps = len(betas)
        self.learn_sigma = bool(learn_sigma)
        self.timestep_map = (list(range(self.num_steps)) if timestep_map is None
                             else list(timestep_map))
        alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(alphas, 0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.log_one_minus_alphas_cumprod = torch.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()
        # q(x_{t-1} | x_t, x_0)
        self.posterior_variance = (betas * (1.0 - self.alphas_cumprod_prev)
                                   / (1.0 - self.alphas_cumprod))
        # the posterior variance is 0 at t = 0: its log takes t = 1's value there
        first = self.posterior_variance[1:2] if self.num_steps > 1 else betas[:1]
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([first, self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = (betas * self.alphas_cumprod_prev.sqrt()
                                     / (1.0 - self.alphas_cumprod))
        self.posterior_mean_coef2 = ((1.0 - self.alphas_cumprod_prev) * alphas.sqrt()
                                     / (1.0 - self.alphas_cumprod))
        # "fixed large" reverse variance: beta_t, with the posterior's at t = 0
        large = torch.cat([self.posterior_variance[1:2], betas[1:]]) if self.num_steps > 1 \
            else betas
        self.fixed_log_variance = torch.log(large)

    # -- the schedule -------------------------------------------------------------------------
    def respaced(self, steps: int) -> GaussianDiffusion:
        """The same process on ``steps`` of its timesteps (:func:`spaced_timesteps`), with the
        betas that keep the cumulative products at those timesteps."""
        kept = spaced_timesteps(self.num_steps, steps)
        if kept == list(range(self.num_steps)):
            return self
        acp = self.alphas_cumprod[kept]
        prev = torch.cat([acp.new_ones(1), acp[:-1]])
        return GaussianDiffusion(1.0 - acp / prev, learn_sigma=self.learn_sigma,
                                 timestep_map=[self.timestep_map[k] for k in kept])

    @staticmethod
    def _take(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """values[t] as ``like``'s dtype and device, shaped (B, 1, ..., 1) to broadcast."""
        out = values.to(like.device)[t.to(like.device)].to(like.dtype)
        return out.reshape(-1, *([1] * (like.dim() - 1)))

    def _check_t(self, t: Tensor, x: Tensor) -> Tensor:
        if not isinstance(t, Tensor) or t.dim() != 1 or t.shape[0] != x.shape[0] \
                or t.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"t: expected a (B,) = ({x.shape[0]},) integer tensor of "
                            f"timesteps, got {t!r:.80}")
        if len(t) and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise ValueError(f"t: timesteps must lie in [0, {self.num_steps - 1}], got "
                             f"{int(t.min())}..{int(t.max())}")
        return t

    # -- closed forms -------------------------------------------------------------------------
    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and log-variance of q(x_t | x_0) = N(sqrt(abar_t) x_0,
        (1 - abar_t) I)."""
        self._check_t(t, x0)
        mean = self._take(self.sqrt_alphas_cumprod, t, x0) * x0
        variance = self._take(1.0 - self.alphas_cumprod, t, x0).expand_as(x0)
        log_variance = self._take(self.log_one_minus_alphas_cumprod, t, x0).expand_as(x0)
        return mean, variance, log_variance

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """A draw of q(x_t | x_0) for the given standard-normal ``noise``."""
        self._check_t(t, x0)
        return (self._take(self.sqrt_alphas_cumprod, t, x0) * x0
                + self._take(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def q_posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Tensor):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        self._check_t(t, x_t)
        mean = (self._take(self.posterior_mean_coef1, t, x_t) * x0
                + self._take(self.posterior_mean_coef2, t, x_t) * x_t)
        variance = self._take(self.posterior_variance, t, x_t).expand_as(x_t)
        log_variance = self._take(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        return (self._take(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                - self._take(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        return ((self._take(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0)
                / self._take(self.sqrt_recipm1_alphas_cumprod, t, x_t))

    def p_mean_variance(self, eps: Tensor, x_t: Tensor, t: Tensor, var_values: Tensor | None = None,
                        clip_denoised: bool = False) -> dict:
        """p(x_{t-1} | x_t) from the model's noise prediction ``eps`` (and ``var_values`` in
        [-1, 1] when ``learn_sigma``): ``{"mean", "variance", "log_variance", "pred_x0"}``.
        ``clip_denoised`` clips the predicted x_0 to [-1, 1] (pixel data) first."""
        self._check_t(t, x_t)
        if self.learn_sigma:
            if var_values is None:
                raise ValueError("var_values: this diffusion learns the variance "
                                 "(learn_sigma=True); pass the model's variance output")
            min_log = self._take(self.posterior_log_variance_clipped, t, x_t)
            max_log = self._take(torch.log(self.betas), t, x_t)
            frac = (var_values + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
        else:
            log_variance = self._take(self.fixed_log_variance, t, x_t).expand_as(x_t)
        pred_x0 = self.predict_x0_from_eps(x_t, t, eps)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return {"mean": mean, "variance": log_variance.exp(), "log_variance": log_variance,
                "pred_x0": pred_x0}

    def vb_terms_bpd(self, eps: Tensor, var_values: Tensor, x0: Tensor, x_t: Tensor, t: Tensor,
                     mask: Tensor | None = None) -> Tensor:
        """The bound's term at ``t`` per sample, in bits per dimension: KL(q(x_{t-1} | x_t,
        x_0) || p(x_{t-1} | x_t)), or the decoder's negative log-likelihood at t = 0,
        averaged like the MSE (``mask`` zeroes given positions)."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x0, x_t, t)
        out = self.p_mean_variance(eps, x_t, t, var_values)
        kl = _normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])
        nll = -discretized_gaussian_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"])
        kl = masked_mean_flat(kl, mask) / math.log(2.0)
        nll = masked_mean_flat(nll, mask) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, nll, kl)

    # -- training -----------------------------------------------------------------------------
    def training_terms(self, model: Callable[[Tensor, Tensor], Tensor], x0: Tensor, t: Tensor,
                       noise: Tensor, mask: Tensor | None = None, channel_dim: int = 1):
        """The masked objective at timesteps ``t``.

        ``model(x_in, timesteps)`` returns the noise prediction, shaped like ``x0`` (with
        twice the channels along ``channel_dim`` when ``learn_sigma``: noise, then variance
        values). Its input is ``x0 * (1 - mask) + x_t * mask``. Returns ``(eps_masked,
        noise_masked, terms)``: the prediction and the noise with given positions zeroed
        (their mean squared difference is the official ``mse`` term), and ``terms`` holding
        ``"vb"`` (per-sample bits, masked) when the variance is learned.
        """
        x_t = self.q_sample(x0, t, noise)
        x_in = x_t if mask is None else x0 * (1 - mask) + x_t * mask
        out = model(x_in, self._model_t(t))
        terms = {}
        if self.learn_sigma:
            eps, var_values = out.chunk(2, dim=channel_dim)
            # the bound trains the variance only: the mean it sees is detached
            terms["vb"] = self.vb_terms_bpd(eps.detach(), var_values, x0, x_t, t, mask)
        else:
            eps = out
        if eps.shape != x0.shape:
            raise ValueError(f"model: returned shape {tuple(out.shape)} for inputs of shape "
                             f"{tuple(x0.shape)}")
        if mask is not None:
            return eps * mask, noise * mask, terms
        return eps, noise, terms

    def _model_t(self, t: Tensor) -> Tensor:
        """The network's timestep indices (the original ones of a respaced process)."""
        if self.timestep_map == list(range(self.num_steps)):
            return t
        return torch.tensor(self.timestep_map, device=t.device, dtype=t.dtype)[t]

    # -- sampling -----------------------------------------------------------------------------
    def sample_progressive(self, model: Callable[[Tensor, Tensor], Tensor], noise: Tensor,
                           sampler: str = "ddpm", eta: float = 0.0, x0: Tensor | None = None,
                           mask: Tensor | None = None, clip_denoised: bool = False,
                           generator: torch.Generator | None = None,
                           channel_dim: int = 1) -> Iterator[Tensor]:
        """Yields x_{t-1} after each step, from x_T = ``noise`` down to x_0.

        ``sampler``: ``"ddpm"`` (ancestral: mean plus the reverse standard deviation times
        fresh noise) or ``"ddim"`` (Song et al.'s eq. 12 with ``eta``: 0 is deterministic,
        1 matches DDPM's posterior variance). With ``mask``, the model input is ``x0 * (1 -
        mask) + x_t * mask`` and every yielded tensor holds ``x0`` at the given positions.
        Fresh noise comes from ``generator`` (default: torch's global one).
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {SAMPLERS}, got {sampler!r}")
        if not isinstance(eta, (int, float)) or isinstance(eta, bool) or eta < 0:
            raise ValueError(f"eta: expected a number >= 0, got {eta!r}")
        if (mask is None) != (x0 is None):
            raise ValueError("mask, x0: pass both (the given values and where they are) or "
                             "neither")
        x = noise
        b = x.shape[0]
        for i in reversed(range(self.num_steps)):
            t = torch.full((b,), i, dtype=torch.long, device=x.device)
            x_in = x if mask is None else x0 * (1 - mask) + x * mask
            out = model(x_in, self._model_t(t))
            if self.learn_sigma:
                eps, var_values = out.chunk(2, dim=channel_dim)
            else:
                eps, var_values = out, None
            p = self.p_mean_variance(eps, x, t, var_values, clip_denoised)
            fresh = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) \
                if (i > 0 and (sampler == "ddpm" or eta > 0)) else None
            if sampler == "ddpm":
                x = p["mean"] if fresh is None else p["mean"] + (0.5 * p["log_variance"]).exp() \
                    * fresh
            else:
                x = self._ddim_step(x, t, p["pred_x0"], eta, fresh)
            if mask is not None:
                x = x0 * (1 - mask) + x * mask
            yield x

    def _ddim_step(self, x_t: Tensor, t: Tensor, pred_x0: Tensor, eta: float,
                   fresh: Tensor | None) -> Tensor:
        # the noise is re-derived from the (possibly clipped) x_0 prediction
        eps = self.predict_eps_from_x0(x_t, t, pred_x0)
        abar = self._take(self.alphas_cumprod, t, x_t)
        abar_prev = self._take(self.alphas_cumprod_prev, t, x_t)
        sigma = eta * ((1 - abar_prev) / (1 - abar)).sqrt() * (1 - abar / abar_prev).sqrt()
        mean = pred_x0 * abar_prev.sqrt() + (1 - abar_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        return mean if fresh is None else mean + sigma * fresh

    def sample(self, model: Callable[[Tensor, Tensor], Tensor], noise: Tensor, **kwargs) -> Tensor:
        """The final x_0 of :meth:`sample_progressive` (same arguments)."""
        x = noise
        for x in self.sample_progressive(model, noise, **kwargs):
            pass
        return x
