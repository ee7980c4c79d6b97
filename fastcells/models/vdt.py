"""VDT, the video diffusion transformer (Lu et al., ICLR 2024, "VDT: General-purpose Video
Diffusion Transformers via Mask Modeling"; seed 002), written from the paper and the
official code (RERV/VDT ``models.py``, ``mask_generator.py``, ``diffusion/``).

The denoiser (:class:`VDTDenoiser`) reads a clip of ``num_frames`` frames (B, T, C, H, W)
and a diffusion timestep per clip and predicts the noise:

- patch embedding (a ``p x p`` stride-``p`` convolution) plus fixed 2D sin-cos spatial and
  1D sin-cos temporal position embeddings (MAE's functions: the first half of the channels
  encodes the column, the second the row);
- ``depth`` blocks, each: temporal attention (each patch position attends over the frames;
  pre-LayerNorm with affine parameters, no adaLN, a ``temporal_fc`` linear on its residual),
  then spatial attention (the patches of one frame) and an MLP (GELU, tanh approximation),
  both with adaLN-Zero: ``Linear(D, 6D)`` of SiLU(timestep embedding) gives shift, scale and
  gate for each, the LayerNorms have no affine parameters (eps 1e-6);
- a final adaLN layer (shift, scale) and a linear to ``p * p * C`` (``2C`` with
  ``learn_sigma``) per patch.
- initialisation as the official code: Xavier-uniform linears (the patch embedding as a
  linear), zero biases, N(0, 0.02) timestep MLP, and every adaLN modulation and the final
  linear zero, so that each block starts as the identity on its spatial branches and the
  model's first prediction is 0.

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` (flash /
memory-efficient kernels on a GPU). Left out of the official model: its class-label
embedder (video mode uses a single class, i.e. a learned constant added to the timestep
embedding, which the timestep MLP's output bias already provides) and drop-path (rate 0).

:class:`VDT` wraps the denoiser, a :class:`~fastcells.models.diffusion.GaussianDiffusion`
and VDT's unified mask modelling into a zoo model (:class:`~fastcells.models.Forecaster`):

- ``forward_train(frames)`` (frames (B, num_frames, C, H, W) in [0, 1]) draws per sample a
  task mask (:meth:`VDT.task_mask`), a timestep and noise, and returns the noise prediction
  and the noise, both zeroed at the given positions, as ``TrainOutput(predictions,
  targets, losses)``: the trainer's MSE of the two is the official masked ``mse`` term, and
  ``losses["vb"]`` the variational-bound term when ``learn_sigma``. (So, unlike the other
  zoo models, ``predictions`` estimate noise, not frames.)
- ``sample(given, pred_len, steps, sampler, eta)`` predicts frames by DDPM or DDIM
  sampling; ``generate(frames, mask, ...)`` fills any masked positions of a clip (any task);
  ``forward(frames, pred_len)`` is ``sample`` with the model's default sampler and steps,
  its noise seeded by ``sample_seed`` and the count of calls since ``reset_sampling()``:
  the batches of an evaluation get independent noise, an evaluation that starts with a
  reset (``evaluate_model`` does) is repeatable, and torch's global RNG is left alone.
- Pixel space by default (frames in [0, 1] are mapped to [-1, 1]); or the latent space of
  an ``autoencoder`` you pass, with ``encode(frames) -> latents`` and ``decode(latents) ->
  frames`` on (N, C, H, W) frames in [0, 1], latents multiplied by ``latent_scale`` (0.18215
  for Stable Diffusion's VAE). It is frozen, kept in eval mode and not part of the model's
  ``state_dict`` or parameters (checkpoints hold the denoiser only); the trainer and CLI
  take it as the path of a TorchScript file (``--model-arg autoencoder=PATH``).

Task masks (ones = to generate), drawn per sample with probabilities ``task_probs`` (the
official mix by default: ``spatial`` 0.2, the six temporal tasks 0.8 / 6 each):
``predict`` (the first ``input_len`` frames given), ``backward`` (the last ``input_len``
given), ``interpolate`` (every ``interpolation_step``-th frame given), ``unconditional``
(nothing given), ``single_frame`` (one random frame given), ``random_frames`` (each frame
masked with probability ``mlm_ratio``), ``spatial`` (BEiT-style rectangular blocks covering
``spatial_mask_ratio`` of the frame, on frames ``s .. T - e`` with s, e drawn in 0..3).
Differences from the official generator: masks are drawn per sample (it draws one per
batch); the spatial blocks are drawn on the patch grid (it draws them on the latent grid,
one patch of VDT-*/2 being 2x2 latent cells); its ``mask[s:-e]``, which masks no frame
when e = 0, is ``mask[s:T - e]`` here; and a draw of blocks that fits none (possible on a
small grid only) is drawn again (up to 100 times). A grid on which no block fits, or hardly
any (a side of one patch, ``spatial_mask_ratio`` under one patch), is refused at
construction while the spatial task has a probability.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int
from .diffusion import SAMPLERS, GaussianDiffusion
from .rollout import Forecaster, TrainOutput

# draws of the spatial task's blocks before an empty mask is accepted (small grids only:
# on 4x4 patches or more a draw practically always fits a block; construction refuses a grid
# on which these draws may still come out empty)
_SPATIAL_DRAWS = 100

TASKS = ("predict", "backward", "interpolate", "unconditional", "single_frame",
         "random_frames", "spatial")
# the official generator: 20% spatial masks, else one of the six temporal tasks uniformly
OFFICIAL_TASK_PROBS = {**{name: 0.8 / 6 for name in TASKS[:-1]}, "spatial": 0.2}


# -- fixed sin-cos embeddings (MAE) ------------------------------------------------------------
def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """(M,) positions -> (M, dim): [sin(p w_k), cos(p w_k)], w_k = 10000^(-k / (dim / 2))."""
    if dim % 2:
        raise ValueError(f"hidden_size: the sin-cos embedding needs an even width, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device="cpu") / (dim / 2))
    out = positions.to(torch.float64).reshape(-1, 1) * omega
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim: int, height: int, width: int) -> Tensor:
    """(height * width, dim), row-major over the grid: column code, then row code."""
    if dim % 4:
        raise ValueError(f"hidden_size: the 2D sin-cos embedding needs a multiple of 4, got "
                         f"{dim}")
    rows, cols = torch.meshgrid(torch.arange(height, device="cpu"),
                                torch.arange(width, device="cpu"), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols.reshape(-1)),
                      sincos_1d(dim // 2, rows.reshape(-1))], dim=1)


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """(B,) timesteps -> (B, dim) sinusoids, cos first (GLIDE/DiT)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


# -- the network -------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis (timm's layout: one qkv linear
    with bias, one output projection), through scaled_dot_product_attention."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        *lead, n, d = x.shape
        x = x.reshape(-1, n, d)
        q, k, v = self.qkv(x).reshape(x.shape[0], n, 3, self.num_heads, d // self.num_heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(x.shape[0], n, d)
        return self.proj(out).reshape(*lead, n, d)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    # x (B, T, N, D); shift, scale (B, D): one conditioning per clip
    return x * (1 + scale[:, None, None]) + shift[:, None, None]


class VDTBlock(nn.Module):
    """Temporal attention, then adaLN-Zero spatial attention and MLP. x: (B, T, N, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.temporal_norm1 = nn.LayerNorm(dim)
        self.temporal_attn = Attention(dim, num_heads)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
            self.adaLN_modulation(c).chunk(6, dim=1)
        xt = x.transpose(1, 2)  # (B, N, T, D): each patch position attends over the frames
        x = x + self.temporal_fc(self.temporal_attn(self.temporal_norm1(xt)).transpose(1, 2))
        x = x + gate_msa[:, None, None] * self.attn(_modulate(self.norm1(x), shift_msa,
                                                              scale_msa))
        return x + gate_mlp[:, None, None] * self.mlp(_modulate(self.norm2(x), shift_mlp,
                                                                scale_mlp))


class VDTDenoiser(nn.Module):
    """The VDT network: (B, T, C, H, W) clip and (B,) timesteps -> (B, T, C_out, H, W).

    ``C_out`` is ``C``, or ``2C`` (noise, then variance values) when ``learn_sigma``. H and W
    must equal ``input_size`` and T be at most ``num_frames`` (the temporal embedding's
    length).
    """

    def __init__(self, in_channels: int, input_size: tuple[int, int], num_frames: int,
                 patch_size: int = 2, hidden_size: int = 384, depth: int = 12,
                 num_heads: int = 6, mlp_ratio: float = 4.0, learn_sigma: bool = False):
        super().__init__()
        h, w = input_size
        p = patch_size
        if h % p or w % p:
            raise ValueError(f"patch_size: the denoiser's input size {h}x{w} (frames, or latents "
                             f"with an autoencoder) must be divisible by patch_size={p}")
        if hidden_size % num_heads:
            raise ValueError(f"num_heads: hidden_size={hidden_size} must be divisible by "
                             f"num_heads={num_heads}")
        self.in_channels, self.input_size, self.num_frames = in_channels, (h, w), num_frames
        self.patch_size, self.learn_sigma = p, learn_sigma
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.grid = (h // p, w // p)
        self.x_embedder = nn.Conv2d(in_channels, hidden_size, kernel_size=p, stride=p)
        self.t_embedder = nn.Sequential(nn.Linear(256, hidden_size), nn.SiLU(),
                                        nn.Linear(hidden_size, hidden_size))
        self.register_buffer("pos_embed", sincos_2d(hidden_size, *self.grid).float(),
                             persistent=False)
        self.register_buffer("time_embed",
                             sincos_1d(hidden_size, torch.arange(num_frames, device="cpu")).float(),
                             persistent=False)
        self.blocks = nn.ModuleList(VDTBlock(hidden_size, num_heads, mlp_ratio)
                                    for _ in range(depth))
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.final_linear = nn.Linear(hidden_size, p * p * self.out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.t_embedder[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder[2].weight, std=0.02)
        for layer in [b.adaLN_modulation[-1] for b in self.blocks] + [
                self.final_modulation[-1], self.final_linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        b, n_t, c, h, w = x.shape
        if (h, w) != self.input_size or c != self.in_channels or n_t > self.num_frames:
            raise ValueError(f"x: expected (B, T <= {self.num_frames}, {self.in_channels}, "
                             f"{self.input_size[0]}, {self.input_size[1]}), got "
                             f"{tuple(x.shape)}")
        gh, gw = self.grid
        tokens = self.x_embedder(x.reshape(b * n_t, c, h, w)).flatten(2).transpose(1, 2)
        tokens = tokens.reshape(b, n_t, gh * gw, -1)
        tokens = tokens + self.pos_embed.to(tokens.dtype) \
            + self.time_embed[:n_t, None].to(tokens.dtype)
        cond = self.t_embedder(timestep_embedding(t).to(tokens.dtype))
        for block in self.blocks:
            tokens = block(tokens, cond)
        shift, scale = self.final_modulation(cond).chunk(2, dim=1)
        out = self.final_linear(_modulate(self.norm_final(tokens), shift, scale))
        return self.unpatchify(out)

    def unpatchify(self, x: Tensor) -> Tensor:
        """(B, T, N, p*p*C_out) -> (B, T, C_out, H, W)."""
        b, n_t = x.shape[:2]
        (gh, gw), p, c = self.grid, self.patch_size, self.out_channels
        x = x.reshape(b, n_t, gh, gw, p, p, c).permute(0, 1, 6, 2, 4, 3, 5)
        return x.reshape(b, n_t, c, gh * p, gw * p)


class _OneStep(nn.Module):
    """One denoiser evaluation, as a module for FLOP tracing (:mod:`.profile`)."""

    def __init__(self, denoiser: VDTDenoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.denoiser(x, t)


# -- the zoo model -----------------------------------------------------------------------------
class _Frozen:
    """Holds the frozen autoencoder outside the module tree; copies of the model (the EMA's)
    share it instead of duplicating a network that never changes."""

    def __init__(self, module):
        self.module = module

    def __deepcopy__(self, memo):
        return self


def _load_autoencoder(autoencoder):
    """None, an object with ``encode``/``decode``, or the path of a TorchScript file of a
    module with ``encode`` and ``decode`` methods (what ``--model-arg autoencoder=PATH``
    gives); returned frozen and in eval mode."""
    if autoencoder is None:
        return None
    if isinstance(autoencoder, (str, os.PathLike)):
        path = os.fspath(autoencoder)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"autoencoder: file {path!r} not found (a TorchScript "
                                    f"module with encode and decode methods)")
        try:
            autoencoder = torch.jit.load(path, map_location="cpu")
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"autoencoder: {path!r} is not a TorchScript archive (torch.jit."
                             f"save of a torch.jit.script-ed module whose encode and decode "
                             f"are @torch.jit.export methods): "
                             f"{str(e).splitlines()[0] if str(e) else e!r}") from None
    for name in ("encode", "decode"):
        if not callable(getattr(autoencoder, name, None)):
            raise TypeError(f"autoencoder: expected an object with encode(frames) and "
                            f"decode(latents), got {type(autoencoder).__name__} without "
                            f"{name}()")
    if isinstance(autoencoder, nn.Module):
        for p in autoencoder.parameters():  # (a ScriptModule has no requires_grad_)
            p.requires_grad_(False)
        autoencoder.eval()
    return autoencoder


def _drop_autoencoder_keys(state_dict, prefix, local_metadata, strict, missing_keys,
                           unexpected_keys, error_msgs):
    # state dicts saved while the autoencoder was a submodule hold its (frozen) weights;
    # the model no longer stores them
    for key in [k for k in state_dict if k.startswith(prefix + "autoencoder.")]:
        del state_dict[key]


def _call_seed(sample_seed: int, call: int) -> int:
    """A 64-bit seed for ``forward``'s call ``call``: numpy's SeedSequence of the pair, so
    different (seed, call) pairs give unrelated streams."""
    return int(np.random.SeedSequence([sample_seed, call]).generate_state(1, np.uint64)[0])


class VDT(Forecaster):
    """VDT: a video diffusion transformer with unified mask modelling.

    ``forward_train``'s predictions estimate the diffusion's noise, not frames
    (``predicts_noise``): the trainer refuses frame losses (``l1_weight``,
    ``temporal_weight``) on them.

    Args:
        frame_channels, frame_size: the frames' C and (H, W) (required: the position
            embeddings are fixed).
        input_len, pred_len: the given and predicted frames of the prediction task (and of
            ``forward``'s default); ``input_len`` frames are given in the ``predict`` and
            ``backward`` tasks, and each further pass of a long rollout reads the last
            ``input_len`` frames.
        num_frames: frames of the clip the network reads (default ``input_len + pred_len``);
            training sequences must have exactly this many.
        patch_size, hidden_size, depth, num_heads, mlp_ratio: the transformer (VDT-S/2: 2,
            384, 12, 6, 4; VDT-L/2: 2, 1152, 28, 16, 4).
        diffusion_steps: T of the diffusion (1000, linear betas).
        learn_sigma: also predict the reverse variance (trained by the ``vb`` loss; the
            official default).
        sampler, sample_steps, eta: ``forward``'s sampling: ``"ddim"`` or ``"ddpm"``, the
            respaced step count, DDIM's eta.
        clip_denoised: clip predicted clean frames to [-1, 1] while sampling (default: in
            pixel space yes, in a latent space no).
        task_probs: {task: probability} of the training masks (module doc; normalised, tasks
            left out have probability 0); default the official mix.
        spatial_mask_ratio, mlm_ratio, interpolation_step: the tasks' settings (0.5, 0.8, 4).
        autoencoder, latent_scale: a frozen autoencoder for latent diffusion (module doc):
            an object with ``encode``/``decode``, or the path of a TorchScript file of one
            (``torch.jit.save`` of a scripted module with ``@torch.jit.export`` encode and
            decode), which is how a config or ``--model-arg autoencoder=PATH`` names it.
            It is not part of the model's ``state_dict`` or ``parameters()``: a checkpoint
            holds the trained denoiser only, and loading one needs the same autoencoder
            again (a run's config keeps the path: use an absolute one, and keep the file).
        sample_seed: seed of ``forward``'s noise (an int >= 0; :meth:`reset_sampling`).
        backend: accepted for the zoo's uniform interface (no recurrent cell here).
    """

    predicts_noise = True  # forward_train's predictions are noise estimates (see above)

    def __init__(self, frame_channels: int, frame_size=None, input_len: int = 10,
                 pred_len: int = 10, num_frames: int | None = None, patch_size: int = 2,
                 hidden_size: int = 384, depth: int = 12, num_heads: int = 6,
                 mlp_ratio: float = 4.0, diffusion_steps: int = 1000, learn_sigma: bool = False,
                 sampler: str = "ddim", sample_steps: int = 50, eta: float = 0.0,
                 clip_denoised: bool | None = None, task_probs: Mapping | None = None,
                 spatial_mask_ratio: float = 0.5, mlm_ratio: float = 0.8,
                 interpolation_step: int = 4, autoencoder: nn.Module | None = None,
                 latent_scale: float = 1.0, sample_seed: int = 0, backend: str = "auto"):
        super().__init__(frame_channels, frame_size, input_len, pred_len, backend)
        if self.frame_size is None:
            raise ValueError("frame_size: VDT's position embeddings are fixed; give the frames' "
                             "(H, W), e.g. frame_size=(64, 64)")
        num_frames = input_len + pred_len if num_frames is None else num_frames
        for name, value in (("num_frames", num_frames), ("patch_size", patch_size),
                            ("hidden_size", hidden_size), ("depth", depth),
                            ("num_heads", num_heads), ("diffusion_steps", diffusion_steps),
                            ("sample_steps", sample_steps),
                            ("interpolation_step", interpolation_step)):
            check_int(name, value)
        if num_frames <= input_len:
            raise ValueError(f"num_frames: the clip must hold the input_len={input_len} given "
                             f"frames and at least one to predict, got {num_frames}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {SAMPLERS}, got {sampler!r}")
        if not isinstance(learn_sigma, bool):
            raise TypeError(f"learn_sigma: expected true or false, got {learn_sigma!r}")
        if clip_denoised is not None and not isinstance(clip_denoised, bool):
            raise TypeError(f"clip_denoised: expected true, false or None (clip in pixel "
                            f"space only), got {clip_denoised!r}")
        check_int("sample_seed", sample_seed, minimum=0)
        for name, value, low, high in (("eta", eta, 0.0, math.inf),
                                       ("spatial_mask_ratio", spatial_mask_ratio, 0.0, 1.0),
                                       ("mlm_ratio", mlm_ratio, 0.0, 1.0),
                                       ("latent_scale", latent_scale, 0.0, math.inf),
                                       ("mlp_ratio", mlp_ratio, 0.0, math.inf)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not low <= value <= high or (name in ("latent_scale", "mlp_ratio")
                                                 and value == 0):
                raise ValueError(f"{name}: expected a number in [{low}, {high}]"
                                 f"{' (> 0)' if name in ('latent_scale', 'mlp_ratio') else ''}"
                                 f", got {value!r}")
        if diffusion_steps < 20:
            raise ValueError(f"diffusion_steps: the linear schedule needs >= 20 steps (its last "
                             f"beta, 0.02 * 1000 / steps, must be <= 1), got {diffusion_steps}")
        if sample_steps > diffusion_steps:
            raise ValueError(f"sample_steps: at most diffusion_steps={diffusion_steps}, got "
                             f"{sample_steps}")
        self.num_frames = num_frames
        self.sampler, self.sample_steps, self.eta = sampler, sample_steps, float(eta)
        self.task_probs = _task_probs(task_probs)
        self.spatial_mask_ratio, self.mlm_ratio = float(spatial_mask_ratio), float(mlm_ratio)
        self.interpolation_step = interpolation_step
        self.sample_seed = int(sample_seed)
        self.reset_sampling()
        self.latent_scale = float(latent_scale)
        # Kept outside the module tree: the autoencoder is the user's, frozen, not trained,
        # so it is in neither parameters() (optimizers, EMA, DDP, parameter counts) nor
        # state_dict() (a checkpoint holds what training changed; the autoencoder comes
        # back from the same argument, e.g. a file path in the run's config). _apply moves
        # and casts it with the model.
        self._frozen = _Frozen(_load_autoencoder(autoencoder))
        if autoencoder is not None:
            latent_c, latent_hw = self._probe_latent()
        else:
            latent_c, latent_hw = frame_channels, self.frame_size
        self.clip_denoised = autoencoder is None if clip_denoised is None else bool(clip_denoised)
        self.latent_channels, self.latent_size = latent_c, latent_hw
        self.denoiser = VDTDenoiser(latent_c, latent_hw, num_frames, patch_size, hidden_size,
                                    depth, num_heads, mlp_ratio, learn_sigma)
        self.diffusion = GaussianDiffusion(num_steps=diffusion_steps, learn_sigma=learn_sigma)
        self._check_spatial_task()
        self._register_load_state_dict_pre_hook(_drop_autoencoder_keys)

    @property
    def autoencoder(self):
        """The frozen autoencoder (None in pixel space); not a submodule (see __init__)."""
        return self._frozen.module

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if isinstance(self.autoencoder, nn.Module):  # .to(), .cuda(), .double(), ...
            self.autoencoder._apply(fn)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if isinstance(self.autoencoder, nn.Module):
            self.autoencoder.eval()  # frozen: its batch norms and dropouts stay in eval mode
        return self

    def _check_spatial_task(self) -> None:
        """The spatial task's blocks are strictly smaller than the patch grid and cover about
        ``spatial_mask_ratio`` of it (BEiT's rule): on a grid with a side of 1, or for a
        target under one patch, no block fits and every spatial mask would be empty, i.e.
        those samples would train on nothing; on some tiny grids a block fits too rarely
        for the redraws (20 test masks, a fixed seed, find an empty one). Refused, not
        drawn silently."""
        if "spatial" not in self.task_probs:
            return
        gh, gw = self.denoiser.grid
        target = self.spatial_mask_ratio * gh * gw
        # no block fits for certain; else try: 20 masks of up to _SPATIAL_DRAWS draws each
        # (a grid where a draw fits one in a few, 2x2 at ratio 0.5, always passes)
        fits = min(gh, gw) >= 2 and target >= 1
        if fits:
            gen = torch.Generator(device="cpu").manual_seed(0)
            fits = all(self._spatial_blocks(gen).any() for _ in range(20))
        if not fits:
            raise ValueError(
                f"task_probs: the 'spatial' task masks rectangles of patches strictly smaller "
                f"than the patch grid, about spatial_mask_ratio={self.spatial_mask_ratio} of "
                f"it; on this {gh}x{gw} grid ({target:.3g} patches) none fits (or hardly "
                f"any), so spatial masks would be empty (zero loss). Give 'spatial' "
                f"probability 0 in task_probs, or use a smaller patch_size or another "
                f"spatial_mask_ratio")

    def _spatial_blocks(self, gen) -> Tensor:
        """The spatial task's blocks on the patch grid, drawn again while a draw fits none."""
        grid = self.denoiser.grid
        for _ in range(_SPATIAL_DRAWS):
            blocks = _block_mask(grid, self.spatial_mask_ratio * grid[0] * grid[1], gen)
            if blocks.any():
                break
        return blocks

    # -- data <-> diffusion space ---------------------------------------------------------------
    @torch.no_grad()
    def _probe_latent(self) -> tuple[int, tuple[int, int]]:
        h, w = self.frame_size
        like = next(self.autoencoder.parameters(), None) \
            if isinstance(self.autoencoder, nn.Module) else None
        z = self.autoencoder.encode(torch.zeros(1, self.frame_channels, h, w,
                                                dtype=like.dtype if like is not None else None,
                                                device=like.device if like is not None else None))
        if not isinstance(z, Tensor) or z.dim() != 4 or z.shape[0] != 1:
            raise TypeError(f"autoencoder: encode() must map (N, C, H, W) frames to (N, c, h, w) "
                            f"latents, got {type(z).__name__} "
                            f"{tuple(z.shape) if isinstance(z, Tensor) else ''}")
        return int(z.shape[1]), (int(z.shape[2]), int(z.shape[3]))

    def encode(self, frames: Tensor) -> Tensor:
        """(B, T, C, H, W) frames in [0, 1] -> the diffusion's space (B, T, c, h, w)."""
        if self.autoencoder is None:
            return frames * 2 - 1
        b, t = frames.shape[:2]
        with torch.no_grad():
            z = self.autoencoder.encode(frames.reshape(b * t, *frames.shape[2:]))
        return (z * self.latent_scale).reshape(b, t, *z.shape[1:]).to(frames.dtype)

    def decode(self, x: Tensor) -> Tensor:
        """The diffusion's space -> frames (B, T, C, H, W) in [0, 1] (not clipped)."""
        if self.autoencoder is None:
            return (x + 1) / 2
        b, t = x.shape[:2]
        with torch.no_grad():
            frames = self.autoencoder.decode(x.reshape(b * t, *x.shape[2:]) / self.latent_scale)
        return frames.reshape(b, t, *frames.shape[1:]).to(x.dtype)

    # -- masks ----------------------------------------------------------------------------------
    def task_mask(self, task: str, batch: int = 1, generator: torch.Generator | None = None,
                  device=None) -> Tensor:
        """A (batch, num_frames, 1, h, w) float mask of task ``task`` (1: generate, 0: given)
        on the diffusion's grid (h, w: the latent size; the frame size in pixel space)."""
        if task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
        t_len, (h, w) = self.num_frames, self.latent_size
        mask = torch.zeros(batch, t_len, 1, h, w)
        for i in range(batch):
            mask[i] = self._one_mask(task, generator)
        return mask.to(device=device if device is not None else self._like().device)

    def _one_mask(self, task: str, gen) -> Tensor:
        t_len, (h, w) = self.num_frames, self.latent_size
        k = self.input_len
        frames = torch.zeros(t_len)
        if task == "predict":
            frames[k:] = 1
        elif task == "backward":
            frames[:t_len - k] = 1
        elif task == "interpolate":
            frames[:] = 1
            frames[::self.interpolation_step] = 0
        elif task == "unconditional":
            frames[:] = 1
        elif task == "single_frame":
            frames[:] = 1
            frames[int(torch.randint(t_len, (1,), generator=gen))] = 0
        elif task == "random_frames":
            frames = (torch.rand(t_len, generator=gen) < self.mlm_ratio).float()
        else:  # spatial
            blocks = self._spatial_blocks(gen)
            p = self.denoiser.patch_size
            blocks = blocks.repeat_interleave(p, 0).repeat_interleave(p, 1)
            start, end = (int(v) for v in torch.randint(4, (2,), generator=gen))
            out = torch.zeros(t_len, 1, h, w)
            out[start:max(start, t_len - end)] = blocks
            return out
        return frames[:, None, None, None].expand(t_len, 1, h, w).clone()

    def draw_masks(self, batch: int, generator: torch.Generator | None = None,
                   device=None) -> Tensor:
        """One task mask per sample, the task drawn from ``task_probs``."""
        names = list(self.task_probs)
        probs = torch.tensor([self.task_probs[n] for n in names])
        picks = torch.multinomial(probs, batch, replacement=True, generator=generator)
        mask = torch.cat([self.task_mask(names[int(i)], 1, generator, "cpu") for i in picks])
        return mask.to(device=device if device is not None else self._like().device)

    # -- training -------------------------------------------------------------------------------
    def forward_train(self, frames: Tensor, mask: Tensor | None = None) -> TrainOutput:
        """frames (B, num_frames, C, H, W) in [0, 1] -> masked noise prediction and noise.

        ``mask`` is the trainer's scheduled-sampling mask and must be None (VDT draws its
        own task masks). Task masks, timesteps and noise come from torch's global RNG (which
        the trainer seeds and checkpoints).
        """
        if mask is not None:
            raise ValueError("mask: VDT draws its own task masks (task_probs); the "
                             "scheduled-sampling mask must be None (--sampling none)")
        self.check_frames(frames)
        if frames.shape[1] != self.num_frames:
            raise ValueError(f"frames: VDT trains on clips of num_frames = {self.num_frames} "
                             f"frames (input_len + pred_len by default), got shape "
                             f"{tuple(frames.shape)}; build the model for this length (the "
                             f"model arguments input_len and pred_len, or num_frames)")
        x0 = self.encode(frames)
        b = x0.shape[0]
        task = self.draw_masks(b, device=x0.device).to(x0.dtype)
        t = torch.randint(self.diffusion.num_steps, (b,), device=x0.device)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype)  # any input layout
        pred, target, terms = self.diffusion.training_terms(self.denoiser, x0, t, noise, task,
                                                            channel_dim=2)
        losses = {"vb": terms["vb"].mean()} if "vb" in terms else {}
        return TrainOutput(pred, target, losses)

    # -- sampling -------------------------------------------------------------------------------
    def _sampling(self, steps, sampler, eta):
        steps = self.sample_steps if steps is None else steps
        sampler = self.sampler if sampler is None else sampler
        eta = self.eta if eta is None else eta
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {SAMPLERS}, got {sampler!r}")
        return self.diffusion.respaced(steps), sampler, eta

    def generate_latent(self, x0: Tensor, mask: Tensor, steps: int | None = None,
                        sampler: str | None = None, eta: float | None = None,
                        generator: torch.Generator | None = None, progressive: bool = False):
        """Sampling in the diffusion's space: ``x0`` (B, T, c, h, w) holds the given values
        where ``mask`` (broadcastable, 1 = generate) is 0. Returns the final clip, or with
        ``progressive`` the list of every step's clip."""
        diffusion, sampler, eta = self._sampling(steps, sampler, eta)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        run = diffusion.sample_progressive(self.denoiser, noise, sampler=sampler, eta=eta,
                                           x0=x0, mask=mask.to(x0.dtype),
                                           clip_denoised=self.clip_denoised,
                                           generator=generator, channel_dim=2)
        if progressive:
            return list(run)
        x = noise
        for x in run:
            pass
        return x

    @torch.no_grad()
    def generate(self, frames: Tensor, mask: Tensor, steps: int | None = None,
                 sampler: str | None = None, eta: float | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Any task: ``frames`` (B, T <= num_frames, C, H, W) in [0, 1] with the given
        content, ``mask`` (B, T), (B, T, 1, h, w) or (B, T, c, h, w) on the diffusion's grid
        (1: generate; e.g. :meth:`task_mask`). Returns the clip with the masked positions
        sampled (pixel space: the given positions are returned unchanged)."""
        self.check_frames(frames)
        b, t_len = frames.shape[:2]
        if t_len > self.num_frames:
            raise ValueError(f"frames: at most num_frames = {self.num_frames} frames per clip, "
                             f"got shape {tuple(frames.shape)}")
        x0 = self.encode(frames)
        mask = _check_task_mask(mask, x0)
        x = self.generate_latent(x0, mask, steps, sampler, eta, generator)
        out = self.decode(x)
        if self.autoencoder is None:  # exactly the given values, not a round trip through [-1, 1]
            m = mask.to(frames.dtype)
            out = frames * (1 - m) + out * m
        return out

    @torch.no_grad()
    def sample(self, given: Tensor, pred_len: int | None = None, steps: int | None = None,
               sampler: str | None = None, eta: float | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """Video prediction: ``given`` (B, k, C, H, W) in [0, 1] -> the next ``pred_len``
        frames (B, pred_len, C, H, W), by ``sampler`` ("ddim" or "ddpm") with ``steps``
        respaced steps (defaults: the model's). Each pass samples a clip of ``num_frames``
        frames whose first frames are the last ``min(k, input_len)`` known ones (given or
        already predicted) until ``pred_len`` frames exist."""
        self.check_frames(given, name="given")
        n = self._pred_len(pred_len)
        have, outputs, made = given, [], 0
        while made < n:
            ctx = have[:, -min(have.shape[1], self.input_len):]
            k = ctx.shape[1]
            clip = torch.cat([ctx, ctx.new_zeros(ctx.shape[0], self.num_frames - k,
                                                 *ctx.shape[2:])], dim=1)
            mask = torch.zeros(ctx.shape[0], self.num_frames, device=ctx.device)
            mask[:, k:] = 1
            new = self.generate(clip, mask, steps, sampler, eta, generator)[:, k:]
            new = new[:, :n - made]
            outputs.append(new)
            made += new.shape[1]
            have = torch.cat([have, new], dim=1)
        return torch.cat(outputs, dim=1)

    def reset_sampling(self) -> None:
        """Restarts the noise of :meth:`forward`: its call ``n`` after a reset (0, 1, ...)
        draws from a generator seeded by ``(sample_seed, n)``, so successive calls (the
        batches of an evaluation) get independent noise, and a sequence of calls that starts
        with a reset gives the same frames every time. ``evaluate_model`` (so the trainer's
        validation and ``fastcells eval``) and ``fastcells predict`` reset it first; a new
        model starts reset."""
        self._sample_calls = 0

    def forward(self, frames: Tensor, pred_len: int | None = None) -> Tensor:
        """frames (B, T_in, C, H, W) -> (B, N, C, H, W): :meth:`sample` with the model's
        sampler and steps, and noise from a generator seeded by ``sample_seed`` and the
        number of calls since :meth:`reset_sampling` (repeatable from a reset, independent
        across calls; torch's global RNG is untouched)."""
        gen = torch.Generator(device=frames.device if isinstance(frames, Tensor) else "cpu")
        gen.manual_seed(_call_seed(self.sample_seed, self._sample_calls))
        out = self.sample(frames, pred_len, generator=gen)
        self._sample_calls += 1
        return out

    # -- profiling ------------------------------------------------------------------------------
    def flop_target(self, input_shape, pred_len: int | None = None):
        """(module, inputs) whose FLOPs :func:`~fastcells.models.profile` counts: one
        denoising step, the network on one clip of ``num_frames`` frames of the diffusion's
        space (a sample costs this times the sampling steps, times the passes of a rollout
        longer than one clip; the autoencoder is not counted)."""
        b = input_shape[0]
        p = self._like()
        x = torch.zeros(b, self.num_frames, self.latent_channels, *self.latent_size,
                        dtype=p.dtype, device=p.device)
        t = torch.zeros(b, dtype=torch.long, device=p.device)
        return _OneStep(self.denoiser), (x, t)


def _task_probs(task_probs) -> dict:
    if task_probs is None:
        return dict(OFFICIAL_TASK_PROBS)
    if not isinstance(task_probs, Mapping) or not task_probs:
        raise TypeError(f"task_probs: expected a mapping {{task: probability}} over {TASKS}, "
                        f"got {task_probs!r}")
    unknown = [k for k in task_probs if k not in TASKS]
    if unknown:
        raise ValueError(f"task_probs: unknown task(s) {unknown}; the tasks are {TASKS}")
    for k, v in task_probs.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"task_probs[{k!r}]: expected a number >= 0, got {v!r}")
    total = float(sum(task_probs.values()))
    if total <= 0:
        raise ValueError("task_probs: at least one task needs a probability > 0")
    return {k: float(v) / total for k, v in task_probs.items() if v > 0}


def _check_task_mask(mask, x0: Tensor) -> Tensor:
    b, t, c, h, w = x0.shape
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask: expected a Tensor of shape ({b}, {t}) or ({b}, {t}, 1|{c}, {h}, "
                        f"{w}), got {type(mask).__name__}")
    if mask.dim() == 2:
        mask = mask[:, :, None, None, None]
    ok = (mask.dim() == 5 and tuple(mask.shape[:2]) == (b, t) and mask.shape[2] in (1, c)
          and tuple(mask.shape[3:]) in ((1, 1), (h, w)))
    if not ok:
        raise ValueError(f"mask: expected shape ({b}, {t}), ({b}, {t}, 1, {h}, {w}) or ({b}, "
                         f"{t}, {c}, {h}, {w}) (1: generate, 0: given) for a clip of shape "
                         f"{tuple(x0.shape)} in the diffusion's space, got {tuple(mask.shape)}")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask: expected values 0 (given) and 1 (generate) only")
    return mask.to(device=x0.device, dtype=x0.dtype)


def _block_mask(grid: tuple[int, int], target: float, gen, min_patches: int = 4,
                min_aspect: float = 0.3) -> Tensor:
    """BEiT's block-wise masking on a (gh, gw) grid: rectangles of random area (at least
    ``min_patches``) and aspect ratio (``min_aspect`` .. 1 / ``min_aspect``) until about
    ``target`` cells are masked. Randomness from ``gen`` (torch), on the CPU (whatever the
    default device, e.g. "meta" while a model is built without memory)."""
    gh, gw = grid
    mask = torch.zeros(gh, gw, device="cpu")
    log_lo, log_hi = math.log(min_aspect), math.log(1 / min_aspect)

    def uniform(lo, hi):
        return lo + (hi - lo) * float(torch.rand(1, generator=gen, device="cpu"))

    count = 0
    while count < target:
        budget = target - count
        delta = 0
        for _ in range(10):
            area = uniform(min_patches, budget)
            aspect = math.exp(uniform(log_lo, log_hi))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if 0 < w < gw and 0 < h < gh:
                top = int(torch.randint(gh - h + 1, (1,), generator=gen, device="cpu"))
                left = int(torch.randint(gw - w + 1, (1,), generator=gen, device="cpu"))
                new = h * w - int(mask[top:top + h, left:left + w].sum())
                if 0 < new <= budget:
                    mask[top:top + h, left:left + w] = 1
                    delta = new
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
    return mask
