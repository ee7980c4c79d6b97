"""RERV/VDT re-created for the tests, in the official code's own layout: the network works
on (b t) n m token tensors with rearranges between the temporal and spatial views, timm's
attention with an explicit softmax, MAE's numpy sin-cos tables (meshgrid with w first),
and unpatchify by the einsum the official code uses; the diffusion's samplers follow its
``GaussianDiffusion`` (numpy float64 schedule, respacing by ``space_timesteps``, mask
applied to the model input only). Weights are loaded from a fastcells ``VDTDenoiser``
under the official parameter names."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


# -- MAE / DiT embeddings -----------------------------------------------------------------------
def mae_1d(dim, pos):
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    angles = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def mae_2d(dim, grid_h, grid_w):
    gw, gh = np.meshgrid(np.arange(grid_w, dtype=np.float32), np.arange(grid_h, dtype=np.float32))
    return np.concatenate([mae_1d(dim // 2, gw), mae_1d(dim // 2, gh)], axis=1)


def dit_timestep(t, dim=256):
    half = dim // 2
    freqs = torch.exp(-np.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


# -- the network in the official layout -------------------------------------------------------
class TimmAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


def modulate(x, shift, scale, frames):
    # (b t) n m -> b (t n) m, scale per clip, back
    bt, n, m = x.shape
    b = bt // frames
    x = x.reshape(b, frames * n, m) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
    return x.reshape(bt, n, m)


def gate(x, g, frames):
    bt, n, m = x.shape
    return (g.unsqueeze(1) * x.reshape(bt // frames, frames * n, m)).reshape(bt, n, m)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, dim, heads, frames, mlp_ratio=4.0):
        super().__init__()
        self.frames = frames
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = TimmAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.temporal_norm1 = nn.LayerNorm(dim)
        self.temporal_attn = TimmAttention(dim, heads)
        self.temporal_fc = nn.Linear(dim, dim)

    def forward(self, x, c):
        s1, sc1, g1, s2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=1)
        t = self.frames
        bt, n, m = x.shape
        b = bt // t
        # (b t) n m -> (b n) t m
        xt = x.reshape(b, t, n, m).permute(0, 2, 1, 3).reshape(b * n, t, m)
        res = self.temporal_attn(self.temporal_norm1(xt))
        res = res.reshape(b, n, t, m).permute(0, 2, 1, 3).reshape(bt, n, m)
        x = x + self.temporal_fc(res)
        x = x + gate(self.attn(modulate(self.norm1(x), s1, sc1, t)), g1, t)
        return x + gate(self.mlp(modulate(self.norm2(x), s2, sc2, t)), g2, t)


class OfficialVDT(nn.Module):
    """Official VDT forward (class-label embedder left out, as in fastcells)."""

    def __init__(self, in_channels, input_size, patch, dim, depth, heads, frames, learn_sigma):
        super().__init__()
        self.patch, self.frames = patch, frames
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        h, w = input_size
        self.grid = (h // patch, w // patch)
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.t_mlp = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.pos_embed = torch.from_numpy(mae_2d(dim, *self.grid)).float().unsqueeze(0)
        self.time_embed = torch.from_numpy(mae_1d(dim, np.arange(frames, dtype=np.float32))) \
            .float().unsqueeze(0)
        self.blocks = nn.ModuleList(Block(dim, heads, frames) for _ in range(depth))
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.final_linear = nn.Linear(dim, patch * patch * self.out_channels)

    def forward(self, x, t):
        b, frames, c, h, w = x.shape
        x = self.proj(x.contiguous().view(-1, c, h, w)).flatten(2).transpose(1, 2)
        x = x + self.pos_embed.to(x.dtype)
        n, m = x.shape[1:]
        x = x.reshape(b, frames, n, m).permute(0, 2, 1, 3).reshape(b * n, frames, m)
        x = x + self.time_embed.to(x.dtype)
        x = x.reshape(b, n, frames, m).permute(0, 2, 1, 3).reshape(b * frames, n, m)
        cond = self.t_mlp(dit_timestep(t).to(x.dtype))
        for block in self.blocks:
            x = block(x, cond)
        shift, scale = self.final_ada(cond).chunk(2, dim=1)
        x = self.final_linear(modulate(self.norm_final(x), shift, scale, frames))
        p, oc = self.patch, self.out_channels
        gh, gw = self.grid
        x = x.reshape(x.shape[0], gh, gw, p, p, oc)
        x = torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], oc, gh * p, gw * p)
        return x.view(b, frames, oc, gh * p, gw * p)

    def load_fastcells(self, denoiser) -> None:
        """Copies a fastcells VDTDenoiser's weights under the official names."""
        ours = denoiser.state_dict()
        rename = {"x_embedder.": "proj.", "t_embedder.": "t_mlp.", "final_modulation.":
                  "final_ada.", "final_linear.": "final_linear.", ".mlp.0.": ".mlp.fc1.",
                  ".mlp.2.": ".mlp.fc2."}
        mapped = {}
        for key, value in ours.items():
            new = key
            for a, b in rename.items():
                new = new.replace(a, b) if (a.startswith(".") or new.startswith(a)) else new
            mapped[new] = value
        self.load_state_dict(mapped, strict=True)


# -- the official diffusion's sampling steps (numpy float64 schedule) ----------------------------
class OfficialDiffusion:
    def __init__(self, steps=1000, respacing=None, learn_sigma=False):
        scale = 1000 / steps
        betas = np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)
        self.timestep_map = list(range(steps))
        if respacing is not None:
            kept = self.space(steps, respacing)
            acp = np.cumprod(1.0 - betas)
            last, new = 1.0, []
            for i, a in enumerate(acp):
                if i in kept:
                    new.append(1 - a / last)
                    last = a
            betas = np.array(new)
            self.timestep_map = sorted(kept)
        self.learn_sigma = learn_sigma
        self.betas = betas
        self.T = len(betas)
        acp = np.cumprod(1.0 - betas)
        self.acp = acp
        self.acp_prev = np.append(1.0, acp[:-1])
        self.post_var = betas * (1.0 - self.acp_prev) / (1.0 - acp)
        self.post_logvar = np.log(np.append(self.post_var[1], self.post_var[1:]))
        self.coef1 = betas * np.sqrt(self.acp_prev) / (1.0 - acp)
        self.coef2 = (1.0 - self.acp_prev) * np.sqrt(1.0 - betas) / (1.0 - acp)

    @staticmethod
    def space(steps, count):
        if count <= 1:
            return {0}
        stride = (steps - 1) / (count - 1)
        cur, taken = 0.0, []
        for _ in range(count):
            taken.append(round(cur))
            cur += stride
        return set(taken)

    def _x(self, arr, i, like):
        return torch.tensor(arr[i], dtype=like.dtype)

    def step(self, model, x, i, raw_x, mask, sampler, eta, fresh, clip):
        t = torch.full((x.shape[0],), self.timestep_map[i], dtype=torch.long)
        out = model(raw_x * (1 - mask) + x * mask, t)
        if self.learn_sigma:
            eps, v = out.chunk(2, dim=2)
            frac = (v + 1) / 2
            logvar = frac * np.log(self.betas[i]) + (1 - frac) * self.post_logvar[i]
        else:
            eps = out
            large = np.append(self.post_var[1], self.betas[1:])
            logvar = torch.full_like(x, float(np.log(large[i])))
        x0 = np.sqrt(1.0 / self.acp[i]) * x - np.sqrt(1.0 / self.acp[i] - 1) * eps
        if clip:
            x0 = x0.clamp(-1, 1)
        if sampler == "ddpm":
            mean = self.coef1[i] * x0 + self.coef2[i] * x
            return mean + (float(i != 0)) * torch.exp(0.5 * logvar) * fresh
        eps = (np.sqrt(1.0 / self.acp[i]) * x - x0) / np.sqrt(1.0 / self.acp[i] - 1)
        a, ap = self.acp[i], self.acp_prev[i]
        sigma = eta * np.sqrt((1 - ap) / (1 - a)) * np.sqrt(1 - a / ap)
        mean = x0 * np.sqrt(ap) + np.sqrt(1 - ap - sigma ** 2) * eps
        return mean + float(i != 0) * sigma * fresh
