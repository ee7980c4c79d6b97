"""Recurrent Memory Transformer (Bulatov et al. 2022) as a video predictor (seed 000).

RMT adds ``m`` memory tokens to a transformer that reads a long sequence one segment at a
time (booydar/LM-RMT, booydar/recurrent-memory-transformer ``MemoryCell`` and
``RecurrentWrapper``):

- The memory is a learned parameter of ``m`` tokens, initialised ``randn(m, D)`` times the
  standard deviation of the input embedding's weight ("scaled like the embeddings").
- Each segment's input is ``[memory_read; segment tokens; memory_write]``, read and write
  both the current memory; the memory of the next segment is the final layer's output at
  the write positions (after the final LayerNorm, as HF GPT-2's last hidden state that the
  official code reads).
- Truncated backpropagation through time: with ``bptt_depth = k`` the memory that enters a
  segment is detached when that segment is older than ``k`` segments before the end of the
  sequence, so one backward over the kept graph reaches the last ``k`` segments (a loss on
  the last segment has gradients w.r.t. frames of the last ``k`` segments and none before);
  ``k = -1`` is full BPTT. (One public version calls ``memory.detach()`` without assigning
  the result, which detaches nothing; here the detached tensor is the one passed on.)
  The memory is not the only path back: when a step reads the model's own prediction
  (scheduled sampling with a mask < 1, or the autoregressive rollout), the first step of a
  segment reads a prediction made in the previous segment, whose graph reaches every older
  segment. So where the memory is detached, that fed-back prediction is detached too, and
  the rule holds for every sampling mask. (The official code feeds nothing back: language
  modelling reads true tokens only.)

For video (our reading; seed 000 gives no design): a frame (C, H, W) becomes
``(H/p) (W/p)`` patch tokens (a linear map of each p x p patch) plus a fixed 2D sin-cos
spatial embedding; a segment is ``s`` consecutive frames and each frame's tokens also get a
fixed 1D sin-cos temporal embedding of the frame's index in its segment (0 .. s-1, so the
model is the same at every segment and the memory carries what is older). Attention is
block-causal: read-memory tokens attend to the read memory only, a frame's tokens attend to
the read memory, to every token of their own frame and of the segment's earlier frames, and
the write-memory tokens attend to everything. Blocks are pre-LayerNorm (attention, then a
GELU MLP), a final LayerNorm follows, and a linear head maps each frame's tokens to the
patches of the next frame.

Because no token attends to a later frame, the segment can be run one frame at a time with
a cache of each block's keys and values: :class:`RMTCell` ``(x_t, state) -> state`` is that
step, so the zoo's rollout, scheduled sampling and training loop run RMT like any
recurrent cell. :meth:`RMTCell.segment` runs a whole segment at once with an explicit
attention mask (teacher forcing: ``forward_train`` without a sampling mask); both compute
the same function. Attention is ``torch.nn.functional.scaled_dot_product_attention`` (the
flash / memory-efficient kernels on a GPU).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from .._checks import check_int, check_tensor
from .rollout import RecurrentForecaster, TrainOutput


# -- fixed position embeddings ---------------------------------------------------------------
def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """(len(positions), dim): ``[sin(pos * w_i), cos(pos * w_i)]`` with
    ``w_i = 10000^(-i / (dim/2))`` (the Transformer's / MAE's embedding); dim even."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
    angles = positions.to(torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """(grid_h * grid_w, dim), row-major over the patch grid: half the channels embed the
    row, half the column (MAE's 2D sin-cos embedding); dim divisible by 4."""
    rows = sincos_1d(dim // 2, torch.arange(grid_h).repeat_interleave(grid_w))
    cols = sincos_1d(dim // 2, torch.arange(grid_w).repeat(grid_h))
    return torch.cat([rows, cols], dim=1)


def segment_mask(memory_size: int, frames: int, tokens_per_frame: int,
                 device=None) -> Tensor:
    """Boolean (L, L) attention mask of ``[read; frame_0 .. frame_{f-1}; write]``,
    ``L = 2m + f N``, True where the query (row) may attend to the key (column)."""
    m, n = memory_size, tokens_per_frame
    # level: read 0, frame j -> j + 1, write f + 1; a query sees keys at its level or below
    level = torch.cat([torch.zeros(m, dtype=torch.long),
                       torch.arange(1, frames + 1).repeat_interleave(n),
                       torch.full((m,), frames + 1, dtype=torch.long)]).to(device)
    return level[None, :] <= level[:, None]


# -- the transformer block -------------------------------------------------------------------
class RMTBlock(nn.Module):
    """Pre-LayerNorm block: ``x + attn(LN(x))``, then ``+ MLP(LN(x))`` (GELU, ``mlp_ratio``).

    ``forward(x, past_k, past_v, mask) -> (out, k, v)``: x (B, L, D); the queries are x's,
    the keys and values are ``past`` (B, heads, P, D/heads) followed by x's own ``k, v``
    (returned, for a cache); ``mask`` (L, P + L) boolean or None (everything visible).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def _qkv(self, x: Tensor):
        b, length, dim = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, length, 3, self.heads, dim // self.heads)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)             # each (B, heads, L, dh)

    def keys_values(self, x: Tensor):
        """Only x's keys and values (a cache entry whose outputs nothing reads)."""
        _, k, v = self._qkv(x)
        return k, v

    def forward(self, x: Tensor, past_k: Tensor | None = None, past_v: Tensor | None = None,
                mask: Tensor | None = None):
        b, length, dim = x.shape
        q, k, v = self._qkv(x)
        keys = k if past_k is None else torch.cat([past_k, k], dim=2)
        values = v if past_v is None else torch.cat([past_v, v], dim=2)
        a = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + self.proj(a.transpose(1, 2).reshape(b, length, dim))
        x = x + self.mlp(self.norm2(x))
        return x, k, v


class RMTState(NamedTuple):
    """The recurrent state of :class:`RMTCell` after reading a frame.

    output: (B, N, D) the frame's tokens after the final block and LayerNorm (what the head
    reads); memory: (B, m, D) the memory the current segment read (and will write from);
    keys, values: per block (B, heads, m + f N, D/heads), the read memory's and the
    segment's first f frames' keys and values; frames: f, frames of the segment read so
    far (1 .. segment_len); segment: index of the current segment (0-based).
    """

    output: Tensor
    memory: Tensor
    keys: tuple
    values: tuple
    frames: int
    segment: int


class RMTCell(nn.Module):
    """The RMT recurrence over frames: ``cell(x_t, state) -> state``.

    Args:
        dim: D, the token width (divisible by ``heads`` and by 4).
        depth: transformer blocks.
        heads: attention heads.
        memory_size: m, memory tokens.
        segment_len: s, frames per segment.
        mlp_ratio: MLP width / D.
        bptt_depth: k >= 1, segments the backward reaches back from the end of the
            sequence (the memory entering segment ``i`` is detached when
            ``i <= num_segments - k``), or -1 for full BPTT.
        init_std: standard deviation of the initial memory (the model passes its patch
            embedding's weight std, "scaled like the embeddings").

    ``forward(x, state=None, num_segments=None)``: x (B, N, D), a frame's tokens with their
    spatial embedding. The first frame of a segment (the first call, or the call after
    ``segment_len`` frames) starts the segment: at a later segment it first writes the
    previous segment's memory (the write tokens attend to the whole cached segment). The
    temporal embedding of the frame's index in the segment is added here. ``num_segments``:
    how many segments the whole sequence has, needed for truncated BPTT (``bptt_depth !=
    -1``) when gradients are recorded. Returns the new :class:`RMTState`.

    ``segment(tokens, memory, write=True)`` runs a whole segment at once (the same function).
    """

    def __init__(self, dim: int = 64, depth: int = 4, heads: int = 4, memory_size: int = 8,
                 segment_len: int = 5, mlp_ratio: float = 4.0, bptt_depth: int = -1,
                 init_std: float = 0.02):
        super().__init__()
        for name, value in (("dim", dim), ("depth", depth), ("heads", heads),
                            ("memory_size", memory_size), ("segment_len", segment_len)):
            check_int(name, value)
        if dim % heads or dim % 4:
            raise ValueError(f"dim: expected a multiple of heads={heads} and of 4 (the 2D "
                             f"sin-cos embedding), got {dim}")
        if isinstance(bptt_depth, bool) or not isinstance(bptt_depth, int) or not (
                bptt_depth == -1 or bptt_depth >= 1):
            raise ValueError(f"bptt_depth: expected an int >= 1 (segments to backpropagate "
                             f"through) or -1 (full BPTT), got {bptt_depth!r}")
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio: expected a number > 0, got {mlp_ratio!r}")
        self.dim, self.memory_size, self.segment_len = dim, memory_size, segment_len
        self.bptt_depth = bptt_depth
        self.blocks = nn.ModuleList(RMTBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.memory = nn.Parameter(torch.randn(memory_size, dim) * init_std)
        # kept in float64 (cast where used), so a float64 model gets it unrounded
        self.register_buffer("temporal", sincos_1d(dim, torch.arange(segment_len)),
                             persistent=False)

    # -- memory ----------------------------------------------------------------------------
    def initial_memory(self, batch: int) -> Tensor:
        """(batch, m, D): the learned memory, for every sequence."""
        return self.memory[None].expand(batch, -1, -1)

    def detaches_before(self, segment: int, num_segments: int | None) -> bool:
        """Whether the memory entering ``segment`` (>= 1) is cut from the graph."""
        return self.bptt_depth != -1 and segment <= num_segments - self.bptt_depth

    def pass_memory(self, memory: Tensor, segment: int, num_segments: int | None) -> Tensor:
        """``memory`` as segment ``segment`` reads it: detached when truncated BPTT says so."""
        if self.bptt_depth != -1 and num_segments is None and torch.is_grad_enabled() \
                and memory.requires_grad:
            raise ValueError(f"num_segments: truncated BPTT (bptt_depth={self.bptt_depth}) "
                             f"counts segments back from the last one; pass how many segments "
                             f"the sequence has (or run without gradients)")
        if num_segments is not None and self.detaches_before(segment, num_segments):
            return memory.detach()
        return memory

    # -- one frame at a time ---------------------------------------------------------------
    def _read(self, memory: Tensor):
        """Keys and values of the read memory in every block (it attends to itself only;
        the last block's output of it is never read, so not computed)."""
        keys, values, x = [], [], memory
        for i, block in enumerate(self.blocks):
            if i == len(self.blocks) - 1:
                k, v = block.keys_values(x)
            else:
                x, k, v = block(x)
            keys.append(k)
            values.append(v)
        return tuple(keys), tuple(values)

    def _write(self, state: RMTState) -> Tensor:
        """The next memory: the write tokens (a copy of the read memory) attend to the whole
        cached segment and to each other; the final LayerNorm of their output."""
        x = state.memory
        for block, k, v in zip(self.blocks, state.keys, state.values):
            x, _, _ = block(x, k, v)
        return self.norm(x)

    def forward(self, x: Tensor, state: RMTState | None = None,
                num_segments: int | None = None) -> RMTState:
        check_tensor(x, "x", ("B", "N", self.dim), self.memory)
        if state is None:
            memory, segment = self.initial_memory(x.shape[0]), 0
        elif state.frames == self.segment_len:
            segment = state.segment + 1
            memory = self.pass_memory(self._write(state), segment, num_segments)
        else:
            memory, segment = state.memory, state.segment
        if state is None or state.frames == self.segment_len:
            keys, values = self._read(memory)
            frames = 0
        else:
            keys, values, frames = state.keys, state.values, state.frames
        h = x + self.temporal[frames].to(x.dtype)
        new_keys, new_values = [], []
        for block, past_k, past_v in zip(self.blocks, keys, values):
            h, k, v = block(h, past_k, past_v)
            new_keys.append(torch.cat([past_k, k], dim=2))
            new_values.append(torch.cat([past_v, v], dim=2))
        return RMTState(self.norm(h), memory, tuple(new_keys), tuple(new_values), frames + 1,
                        segment)

    # -- a whole segment at once -----------------------------------------------------------
    def segment(self, tokens: Tensor, memory: Tensor, write: bool = True):
        """tokens (B, f, N, D) of f <= segment_len frames (spatial embedding added), memory
        (B, m, D) -> (outputs (B, f, N, D) after the final LayerNorm, next memory (B, m, D)
        or None when ``write`` is False)."""
        b, f, n, d = tokens.shape
        if not 1 <= f <= self.segment_len:
            raise ValueError(f"tokens: a segment holds 1 .. {self.segment_len} frames, got "
                             f"shape {tuple(tokens.shape)}")
        m = self.memory_size
        frames = (tokens + self.temporal[:f, None].to(tokens.dtype)).reshape(b, f * n, d)
        parts = [memory, frames, memory] if write else [memory, frames]
        x = torch.cat(parts, dim=1)
        mask = segment_mask(m, f, n, x.device)
        if not write:
            mask = mask[:-m, :-m]
        for block in self.blocks:
            x, _, _ = block(x, mask=mask)
        x = self.norm(x)
        outputs = x[:, m:m + f * n].reshape(b, f, n, d)
        return outputs, (x[:, m + f * n:] if write else None)


# -- the video model ---------------------------------------------------------------------------
class RecurrentMemoryTransformer(RecurrentForecaster):
    """RMT video predictor: patch tokens, :class:`RMTCell`, a linear head to the next frame's
    patches (module docstring for the design).

    Args:
        frame_channels: C of the frames.
        patch_size: p; H and W must be divisible by it (N = HW / p^2 tokens per frame).
        dim, depth, heads, mlp_ratio: the transformer (D, blocks, heads, MLP width / D).
        memory_size: m, memory tokens.
        segment_len: s, frames per segment.
        bptt_depth: k >= 1 segments of truncated BPTT (counted back from the last segment of
            the training sequence; the memory and any fed-back prediction entering an older
            segment are detached), or -1 for full BPTT.
        checkpoint: recompute in backward instead of storing activations: each segment of
            a teacher-forced ``forward_train`` (``mask=None``), each frame step otherwise.
        frame_size, input_len, pred_len: as for every model.
        backend: ``"auto"`` or ``"reference"`` (RMT has no fastcells recurrent cell; its
            attention runs through PyTorch's ``scaled_dot_product_attention``).

    Shapes: ``forward`` (B, T_in, C, H, W) -> (B, pred_len, C, H, W), one :class:`RMTCell`
    step per frame (:class:`~fastcells.models.rollout.RecurrentForecaster`);
    ``forward_train(frames, mask=None)`` predicts frames 1..T-1; without a sampling mask
    every input frame is given, so it runs each segment at once (:meth:`RMTCell.segment`).
    """

    def __init__(self, frame_channels: int, patch_size: int = 8, dim: int = 64, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 4.0, memory_size: int = 8,
                 segment_len: int = 5, bptt_depth: int = -1, checkpoint: bool = False,
                 frame_size=None, input_len: int = 10, pred_len: int = 10,
                 backend: str = "auto"):
        super().__init__(frame_channels, frame_size, input_len, pred_len, backend)
        if self.requested_backend not in ("auto", "reference"):
            raise ValueError(f"backend: RMT has no fastcells recurrent cell (its attention is "
                             f"PyTorch's scaled_dot_product_attention); use backend='auto' or "
                             f"'reference', got {backend!r}")
        if not isinstance(checkpoint, bool):
            raise TypeError(f"checkpoint: expected true or false, got {checkpoint!r}")
        self.patch_size = check_int("patch_size", patch_size)
        patch = frame_channels * patch_size ** 2
        self.patch_embed = nn.Linear(patch, dim)
        self.cell = RMTCell(dim, depth, heads, memory_size, segment_len, mlp_ratio, bptt_depth,
                            init_std=self.patch_embed.weight.std().item())
        self.head = nn.Linear(dim, patch)
        self.checkpoint = checkpoint
        self._pos_cache: dict = {}
        if self.frame_size is not None:
            self._check_spatial(*self.frame_size)

    def _check_spatial(self, height: int, width: int) -> None:
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"frames: H and W must be divisible by patch_size={p}, got "
                             f"{height}x{width}")

    # -- frames <-> tokens -----------------------------------------------------------------
    def _spatial(self, gh: int, gw: int, like: Tensor) -> Tensor:
        key = (gh, gw, like.device, like.dtype)
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_2d(self.cell.dim, gh, gw).to(like.device, like.dtype)
        return self._pos_cache[key]

    def embed(self, frames: Tensor) -> Tensor:
        """(..., C, H, W) -> (..., N, D): patches in row-major grid order, each a
        (C, p, p) vector, mapped linearly, plus the 2D sin-cos spatial embedding."""
        *lead, c, h, w = frames.shape
        p = self.patch_size
        k = len(lead)
        x = frames.reshape(*lead, c, h // p, p, w // p, p)
        x = x.permute(*range(k), k + 1, k + 3, k, k + 2, k + 4)  # (..., H/p, W/p, C, p, p)
        x = self.patch_embed(x.reshape(*lead, (h // p) * (w // p), c * p * p))
        return x + self._spatial(h // p, w // p, x)

    def unembed(self, tokens: Tensor, height: int, width: int) -> Tensor:
        """(..., N, D) -> (..., C, H, W) through the head (the inverse patch layout)."""
        *lead, n, _ = tokens.shape
        p, c = self.patch_size, self.frame_channels
        k = len(lead)
        x = self.head(tokens).reshape(*lead, height // p, width // p, c, p, p)
        x = x.permute(*range(k), k + 2, k, k + 3, k + 1, k + 4)  # (..., C, H/p, p, W/p, p)
        return x.reshape(*lead, c, height, width)

    # -- the recurrence --------------------------------------------------------------------
    def begin_rollout(self, num_steps: int):
        # the rollout's segment count, which truncated BPTT counts back from
        return (None, math.ceil(num_steps / self.cell.segment_len))

    def step(self, frame: Tensor, state, need_aux: bool = False):
        cell_state, num_segments = state if state is not None else (None, None)
        tokens = self.embed(frame)
        if self.checkpoint and torch.is_grad_enabled():
            cell_state = _checkpoint(self.cell, tokens, cell_state, num_segments,
                                     use_reentrant=False)
        else:
            cell_state = self.cell(tokens, cell_state, num_segments)
        prediction = self.unembed(cell_state.output, frame.shape[-2], frame.shape[-1])
        return prediction, (cell_state, num_segments), None

    def _rollout(self, first: Tensor, num_steps: int, pick, need_aux: bool):
        # Truncated BPTT must also cut the predictions fed back across its boundary: the
        # first step of a segment whose entering memory is detached reads (with a sampling
        # mask < 1, or in an autoregressive rollout) the previous segment's last prediction,
        # whose graph runs through every older segment. Detaching it there keeps the rule
        # "gradients reach exactly bptt_depth segments back" for every mask.
        s = self.cell.segment_len
        num_segments = math.ceil(num_steps / s)

        def cut(t, previous):
            if t % s == 0 and self.cell.detaches_before(t // s, num_segments):
                previous = previous.detach()
            return pick(t, previous)

        return super()._rollout(first, num_steps, cut, need_aux)

    def forward_train(self, frames: Tensor, mask: Tensor | None = None) -> TrainOutput:
        if mask is not None:  # steps read predictions: one frame at a time
            return super().forward_train(frames, mask)
        self.check_frames(frames, min_len=2)
        b, t, _, h, w = frames.shape
        s = self.cell.segment_len
        tokens = self.embed(frames[:, :-1])                    # (B, T-1, N, D)
        num_segments = math.ceil((t - 1) / s)
        memory = self.cell.initial_memory(b)
        outputs = []
        for i in range(num_segments):
            if i > 0:
                memory = self.cell.pass_memory(memory, i, num_segments)
            write = i < num_segments - 1  # the last segment's memory is never read
            chunk = tokens[:, i * s:(i + 1) * s]
            if self.checkpoint and torch.is_grad_enabled():
                out, memory = _checkpoint(self.cell.segment, chunk, memory, write,
                                          use_reentrant=False)
            else:
                out, memory = self.cell.segment(chunk, memory, write)
            outputs.append(out)
        predictions = self.unembed(torch.cat(outputs, dim=1), h, w)
        return TrainOutput(predictions, frames[:, 1:], {})
