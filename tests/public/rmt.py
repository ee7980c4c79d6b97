"""booydar/recurrent-memory-transformer (modeling_rmt/language_modeling.py): the
``MemoryCell`` / ``RecurrentWrapper`` recurrence, re-created for the tests around a plain
transformer, and applied to video as fastcells' RMT describes it.

MemoryCell: the memory parameter repeated over the batch; the segment's input is
``cat([memory, embeddings, memory])``; the next memory is the last hidden state at the last
``m`` positions; the segment's outputs are positions ``m .. -m``. RecurrentWrapper: splits
the sequence into left-aligned segments of ``segment_size``, runs the cell on each and
passes the memory on through ``manage_gradients``. The official ``manage_gradients`` counts
against ``max_n_segments`` and keeps segment 0's memory attached; this one detaches the
memory entering segment ``i`` when ``i <= n_segments - k2`` (fastcells' documented rule),
and passes the detached tensor on.

The base model does not use fastcells' code paths: attention is an explicit softmax of
``q k^T / sqrt(d)`` with the mask built token by token from the roles (read memory, frame
j, write memory), patches go through ``F.unfold`` / ``F.fold``, and the sin-cos
embeddings are computed element by element with ``math``. It borrows only the weights of
a fastcells ``RecurrentMemoryTransformer``.
"""
import math

import torch
import torch.nn.functional as F


def sincos(dim, pos):
    half = dim // 2
    return [math.sin(pos / 10000 ** (i / half)) for i in range(half)] + \
        [math.cos(pos / 10000 ** (i / half)) for i in range(half)]


def spatial_embedding(dim, gh, gw, like):
    rows = [sincos(dim // 2, r) + sincos(dim // 2, c) for r in range(gh) for c in range(gw)]
    return torch.tensor(rows, dtype=like.dtype)


def role_mask(m, frames, n, write):
    """Token roles: ("read",), ("frame", j), ("write",); True where attention is allowed."""
    roles = [("read", -1)] * m + [("frame", j) for j in range(frames) for _ in range(n)]
    roles += [("write", frames)] * (m if write else 0)
    allowed = torch.zeros(len(roles), len(roles), dtype=torch.bool)
    for a, (qr, qj) in enumerate(roles):
        for b, (kr, kj) in enumerate(roles):
            if qr == "read":
                allowed[a, b] = kr == "read"
            elif qr == "frame":
                allowed[a, b] = kr == "read" or (kr == "frame" and kj <= qj)
            else:
                allowed[a, b] = True
    return allowed


def block(blk, x, allowed):
    b, length, d = x.shape
    heads = blk.heads
    h = F.layer_norm(x, (d,), blk.norm1.weight, blk.norm1.bias)
    q, k, v = (h @ blk.qkv.weight.T + blk.qkv.bias).split(d, dim=-1)
    split = lambda t: t.reshape(b, length, heads, d // heads).transpose(1, 2)
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    scores = scores.masked_fill(~allowed, float("-inf"))
    a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, length, d)
    x = x + a @ blk.proj.weight.T + blk.proj.bias
    h = F.layer_norm(x, (d,), blk.norm2.weight, blk.norm2.bias)
    lin1, _, lin2 = blk.mlp
    h = F.gelu(h @ lin1.weight.T + lin1.bias)
    return x + h @ lin2.weight.T + lin2.bias


def base_model(model, embeds, frames, n, write):
    """The transformer on ``inputs_embeds``: the last hidden state (after the final norm)."""
    cell = model.cell
    allowed = role_mask(cell.memory_size, frames, n, write)
    x = embeds
    for blk in cell.blocks:
        x = block(blk, x, allowed)
    return F.layer_norm(x, (x.shape[-1],), cell.norm.weight, cell.norm.bias)


def memory_cell(model, embeds, memory, frames, n, write):
    m = model.cell.memory_size
    inputs = torch.cat([memory, embeds, memory] if write else [memory, embeds], dim=1)
    hidden = base_model(model, inputs, frames, n, write)
    out = hidden[:, m:m + frames * n]
    return out, (hidden[:, -m:] if write else None)


def recurrent_wrapper(model, frames, k2):
    """Teacher-forced predictions of frames[:, 1:] (B, T, C, H, W) and the memory each
    segment read (after manage_gradients)."""
    cell, p = model.cell, model.patch_size
    b, t, c, h, w = frames.shape
    gh, gw, d, s = h // p, w // p, cell.dim, cell.segment_len
    inputs = frames[:, :-1]
    patches = F.unfold(inputs.reshape(-1, c, h, w), p, stride=p).transpose(1, 2)
    tokens = patches @ model.patch_embed.weight.T + model.patch_embed.bias
    tokens = tokens + spatial_embedding(d, gh, gw, tokens)
    tokens = tokens.reshape(b, t - 1, gh * gw, d)
    temporal = torch.tensor([sincos(d, j) for j in range(s)], dtype=tokens.dtype)
    n_segments = -(-(t - 1) // s)
    memory = cell.memory.repeat(b, 1, 1)
    outputs, memories = [], []
    for seg in range(n_segments):
        if seg > 0 and k2 != -1 and seg <= n_segments - k2:
            memory = memory.detach()
        memories.append(memory)
        chunk = tokens[:, seg * s:(seg + 1) * s]
        f = chunk.shape[1]
        embeds = (chunk + temporal[:f, None]).reshape(b, f * gh * gw, d)
        write = seg < n_segments - 1
        out, memory = memory_cell(model, embeds, memory, f, gh * gw, write)
        outputs.append(out.reshape(b, f, gh * gw, d))
    out = torch.cat(outputs, dim=1)
    pix = out @ model.head.weight.T + model.head.bias                   # (B, T-1, N, C p p)
    pred = F.fold(pix.reshape(-1, gh * gw, c * p * p).transpose(1, 2), (h, w), p, stride=p)
    return pred.reshape(b, t - 1, c, h, w), memories
