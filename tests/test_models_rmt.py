"""The Recurrent Memory Transformer predictor: shapes and presets, the frame-by-frame cell
against the whole-segment path and against a re-creation of the official recurrence,
truncated BPTT (gradients reach exactly k segments back), checkpointing, the rollout's
semantics, gradcheck, torch.compile, FLOPs of the attention, errors, and the CLI."""
import json
import math
import os

import pytest
import torch

import fastcells.models as M
from fastcells.cli import main as cli
from fastcells.models.rmt import RMTCell, segment_mask, sincos_2d
from fastcells.models.sampling import full_mask

from .helpers import assert_close, randomize
from .models_helpers import one_thread  # noqa: F401 (fixture)
from .public import rmt as public

pytestmark = pytest.mark.usefixtures("one_thread")

# C 2, 12x20 frames, patch 4: a 3x5 grid of 15 tokens; segments of 2 frames, 3 memory tokens
TINY = dict(frame_channels=2, patch_size=4, dim=16, depth=2, heads=2, mlp_ratio=2.0,
            memory_size=3, segment_len=2)
H, W = 12, 20


def tiny(dtype=torch.float64, **changes):
    model = M.create("rmt", **{**TINY, **changes}).to(dtype)
    randomize(model)
    return model


def frames_like(b, t, dtype=torch.float64, layout="contiguous"):
    x = torch.rand(b, t, 2, H, W, dtype=dtype)
    if layout == "channels_last":
        x = x.reshape(b * t, 2, H, W).contiguous(memory_format=torch.channels_last)
        return x.reshape(b, t, 2, H, W)
    if layout == "strided":  # every other frame of a longer sequence, a non-contiguous view
        return torch.rand(b, 2 * t, 2, H, W, dtype=dtype)[:, ::2]
    return x


# --- presets and shapes -------------------------------------------------------------------


def test_registry_and_presets():
    assert "rmt" in M.list_models() and M.describe("rmt")
    assert M.list_presets("rmt") == ["mmnist", "taxibj"]
    model = M.create("rmt", preset="mmnist").eval()
    assert (model.frame_channels, model.frame_size, model.input_len, model.pred_len) == \
        (1, (64, 64), 10, 10)
    assert (model.patch_size, model.cell.dim, len(model.cell.blocks), model.cell.memory_size,
            model.cell.segment_len, model.cell.bptt_depth) == (8, 64, 4, 8, 5, -1)
    assert M.count_params(model) == 208896  # README's zoo table
    assert M.count_params(M.create("rmt", preset="taxibj")) == 204768
    assert model.backend == "reference"
    with torch.no_grad():
        assert model(torch.rand(1, 2, 1, 64, 64), pred_len=3).shape == (1, 3, 1, 64, 64)
    taxi = M.create("rmt", preset="taxibj", dim=8, depth=1, heads=2).eval()
    with torch.no_grad():
        assert taxi(torch.rand(1, 4, 2, 32, 32)).shape == (1, 4, 2, 32, 32)
    # the memory starts scaled like the patch embedding's weights
    std = model.patch_embed.weight.std().item()
    assert 0.7 * std < model.cell.memory.std().item() < 1.3 * std


@pytest.mark.parametrize("batch,layout", [(1, "contiguous"), (3, "channels_last"),
                                          (2, "strided")])
def test_shapes_for_odd_grids_and_layouts(batch, layout):
    model = tiny(torch.float32)
    x = frames_like(batch, 5, torch.float32, layout)
    with torch.no_grad():
        out = model(x[:, :3], pred_len=4)
        assert out.shape == (batch, 4, 2, H, W) and torch.isfinite(out).all()
        ref = model(x[:, :3].contiguous(), pred_len=4)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    train = model.forward_train(x)
    assert train.predictions.shape == train.targets.shape == (batch, 4, 2, H, W)
    assert train.losses == {}
    loss = model.training_loss(x)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_position_embeddings_and_mask():
    pos = sincos_2d(8, 2, 3)
    assert pos.shape == (6, 8)
    # row-major grid: the first half embeds the row, the second the column
    torch.testing.assert_close(pos[4, :4], pos[3, :4])
    assert not torch.equal(pos[4, 4:], pos[3, 4:])
    torch.testing.assert_close(pos[:, :4].to(torch.float64),
                               public.spatial_embedding(8, 2, 3, pos.double())[:, :4])
    mask = segment_mask(2, 3, 4)
    assert torch.equal(mask, public.role_mask(2, 3, 4, write=True))


# --- the two paths and the official recurrence --------------------------------------------


@pytest.mark.parametrize("t", [6, 7])  # 5 steps: segments 2, 2, 1; 6 steps: 2, 2, 2
def test_segment_path_equals_frame_steps_and_the_public_recurrence(t):
    model = tiny()
    x = frames_like(2, t)
    steps = t - 2
    whole = model.forward_train(x)                       # each segment at once, masked
    stepped = model.forward_train(x, torch.ones(2, steps))  # one frame at a time, KV cache
    want, memories = public.recurrent_wrapper(model, x, k2=-1)
    assert_close(whole.predictions, want, 1e-12, "segments")
    assert_close(stepped.predictions, want, 1e-12, "steps")
    # the memory the cell carries is the one the official wrapper passes on
    state = None
    for i in range(2 * model.cell.segment_len + 1):
        state = model.cell(model.embed(x[:, i]), state, num_segments=3)
    assert_close(state.memory, memories[2], 1e-12, "memory")


def test_gradients_of_both_paths_agree():
    model = tiny()
    x = frames_like(2, 6).requires_grad_()
    grads = []
    for mask in (None, torch.ones(2, 4)):
        loss = model.training_loss(x, mask)
        grads.append(torch.autograd.grad(loss, [x, *model.parameters()]))
    for a, b in zip(*grads):
        assert_close(a, b, 1e-11, "grad")


def test_gradcheck_float64():
    model = M.create("rmt", frame_channels=1, patch_size=2, dim=8, depth=1, heads=2,
                     memory_size=2, segment_len=2, mlp_ratio=1.0).double()
    randomize(model)
    x = torch.rand(1, 4, 1, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: model.forward_train(f).predictions, (x,))
    assert torch.autograd.gradcheck(
        lambda f: model.forward_train(f, torch.tensor([[0.0, 1.0]], dtype=torch.float64))
        .predictions, (x,))


# --- the rollout --------------------------------------------------------------------------


def test_rollout_reads_frames_then_predictions():
    """T_in + N - 1 steps; a mask of zeros after the inputs is the autoregressive rollout;
    a mixed mask reads mask * frame + (1 - mask) * prediction."""
    model = tiny(torch.float32)
    t_in, n = 3, 4
    x = frames_like(2, t_in + n, torch.float32)
    calls = []
    step = model.step
    model.step = lambda f, s, aux: calls.append(f) or step(f, s, aux)
    with torch.no_grad():
        forecast = model(x[:, :t_in], pred_len=n)
        assert len(calls) == t_in + n - 1
        auto = model.forward_train(x, full_mask(torch.zeros(2, n - 1), t_in))
        calls.clear()
        mask = torch.rand(2, t_in + n - 2)
        mixed = model.forward_train(x, mask)
    torch.testing.assert_close(auto.predictions[:, t_in - 1:], forecast)
    for t in range(1, t_in + n - 1):
        m = mask[:, t - 1, None, None, None]
        torch.testing.assert_close(calls[t], m * x[:, t] + (1 - m) * mixed.predictions[:, t - 1])


# --- truncated BPTT -----------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, -1])
@pytest.mark.parametrize("sampled", [False, True])
def test_truncated_bptt_reaches_exactly_k_segments_back(k, sampled):
    """7 frames, 6 steps, segments of 2: steps (0, 1) (2, 3) (4, 5). The last segment's loss
    has gradients w.r.t. the input frames of the last k segments, and exactly zero before.
    (With a sampling mask of ones the frames go in one step at a time; the same rule.)"""
    model = tiny(bptt_depth=k)
    x = frames_like(1, 7).requires_grad_()
    mask = torch.ones(1, 5, dtype=torch.float64) if sampled else None
    out = model.forward_train(x, mask)
    loss = out.predictions[:, 4:].square().sum()  # the last segment's predictions
    (grad,) = torch.autograd.grad(loss, [x])
    per_segment = [grad[:, 2 * i:2 * i + 2].abs().sum().item() for i in range(3)]
    reach = 3 if k == -1 else k
    for i, g in enumerate(per_segment):
        if i >= 3 - reach:
            assert g > 0, (i, per_segment)
        else:
            assert g == 0, (i, per_segment)
    assert grad[:, 6].abs().sum() == 0  # the last frame is only a target


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("kind", ["zeros", "mixed", "random"])
def test_truncated_bptt_also_cuts_fed_back_predictions(k, kind):
    """9 frames, 8 steps, segments of 2: steps (0, 1) (2, 3) (4, 5) (6, 7). With a sampling
    mask below 1 the first step of a segment reads the previous segment's prediction, whose
    graph reaches every older segment: it is cut where the memory is, so the last segment's
    loss reaches exactly the last k segments for every mask (all zeros: only predictions are
    read after step 0). Inside them, frame t has a gradient exactly where step t reads it
    (mask > 0)."""
    model = tiny(bptt_depth=k)
    x = frames_like(1, 9).requires_grad_()
    gen = torch.Generator().manual_seed(k)
    mask = {"zeros": torch.zeros(1, 7, dtype=torch.float64),
            "mixed": torch.tensor([[1.0, 0, 1, 0, 0, 1, 0]], dtype=torch.float64),
            "random": torch.rand(1, 7, generator=gen, dtype=torch.float64)}[kind]
    out = model.forward_train(x, mask)
    (grad,) = torch.autograd.grad(out.predictions[:, 6:].square().sum(), [x])
    reads = [None] + [bool(mask[0, t - 1] > 0) for t in range(1, 8)]
    for t in range(8):
        if t // 2 < 4 - k:  # an older segment: nothing, whatever the mask
            assert grad[:, t].abs().sum() == 0, (t, grad.abs().sum((0, 2, 3, 4)))
        else:
            assert (grad[:, t].abs().sum() > 0) == reads[t], (t, reads)
    assert grad[:, 8].abs().sum() == 0  # only a target
    # the autoregressive rollout with gradients follows the same rule: 3 given frames and
    # 6 predicted are 8 steps; the given frames are read in segments 0 and 1 (steps 0..2)
    given = x[:, :3].detach().requires_grad_()
    (grad,) = torch.autograd.grad(model(given, pred_len=6)[:, -2:].square().sum(), [given])
    assert [bool(grad[:, t].abs().sum() > 0) for t in range(3)] == [False, False, k >= 3]


@pytest.mark.parametrize("k", [1, 2])
def test_truncated_gradients_equal_the_public_recurrence(k):
    """The same gradients as the official recurrence with its detach assigned (frames and
    every parameter); the memory parameter still learns from the segments' own reads."""
    model = tiny(bptt_depth=k)
    x = frames_like(1, 7)
    grads = []
    for run in (lambda f: model.forward_train(f).predictions,
                lambda f: public.recurrent_wrapper(model, f, k2=k)[0]):
        f = x.clone().requires_grad_()
        loss = run(f).square().mean()
        grads.append(torch.autograd.grad(loss, [f, *model.parameters()]))
    for a, b in zip(*grads):
        assert_close(a, b, 1e-11, "grad")
    memories = public.recurrent_wrapper(model, x, k2=k)[1]
    assert [m.requires_grad for m in memories] == [True, False, k == 2]
    assert grads[0][model_index(model, "cell.memory") + 1].abs().sum() > 0


def model_index(model, name):
    return [n for n, _ in model.named_parameters()].index(name)


def test_the_cell_needs_the_segment_count_to_truncate():
    cell = RMTCell(dim=8, depth=1, heads=2, memory_size=2, segment_len=1, bptt_depth=1)
    x = torch.rand(1, 3, 8)
    state = cell(x)
    with pytest.raises(ValueError, match="num_segments: truncated BPTT"):
        cell(x, state)
    assert not cell(x, state, num_segments=2).memory.requires_grad  # detached at segment 1
    with torch.no_grad():
        cell(x, state)  # no gradients recorded: nothing to truncate


# --- checkpointing ------------------------------------------------------------------------


@pytest.mark.parametrize("sampled", [False, True])
def test_checkpointing_gives_the_same_gradients(sampled):
    plain = tiny(bptt_depth=2)
    ckpt = M.create("rmt", **TINY, bptt_depth=2, checkpoint=True).double()
    ckpt.load_state_dict(plain.state_dict())
    x = frames_like(2, 7)
    mask = torch.rand(2, 5, dtype=torch.float64) if sampled else None
    results = []
    for model in (plain, ckpt):
        xi = x.clone().requires_grad_()
        loss = model.training_loss(xi, mask)
        results.append((loss, torch.autograd.grad(loss, [xi, *model.parameters()])))
    assert_close(results[1][0], results[0][0], 1e-14, "loss")
    for a, b in zip(results[1][1], results[0][1]):
        assert_close(a, b, 1e-12, "grad")


def test_checkpointing_saves_less_for_backward():
    """The recomputed segments keep only their inputs: fewer saved tensor bytes."""
    def saved_bytes(model):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.training_loss(frames_like(2, 7, torch.float32))
        return total[0]
    plain = tiny(torch.float32)
    ckpt = M.create("rmt", **TINY, checkpoint=True)
    assert saved_bytes(ckpt) < 0.5 * saved_bytes(plain)


# --- torch.compile, autocast -----------------------------------------------------------------


def test_compiles_fullgraph():
    """The whole-segment path (explicit mask) and a frame step (cache growth) trace without
    graph breaks (one block: compiling is what costs here)."""
    model = tiny(torch.float32, depth=1)
    x = frames_like(1, 5, torch.float32)
    tokens = model.embed(x[:, :2])
    memory = model.cell.initial_memory(1)
    torch._dynamo.reset()
    segment = torch.compile(model.cell.segment, fullgraph=True, backend="aot_eager")
    for got, want in zip(segment(tokens, memory), model.cell.segment(tokens, memory)):
        torch.testing.assert_close(got, want)
    step = torch.compile(model.cell, fullgraph=True, backend="aot_eager")
    got, want = step(tokens[:, 0]), model.cell(tokens[:, 0])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    torch._dynamo.reset()


def test_bf16_autocast_trains():
    model = tiny(torch.float32)
    x = frames_like(2, 5, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.training_loss(x) + model.training_loss(x, torch.rand(2, 3))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all()
                                        for p in model.parameters())


# --- FLOPs of the attention -----------------------------------------------------------------


def rollout_flops(d, depth, hidden, m, s, tok, patch, steps):
    """fvcore's count of the inference rollout, by hand: every linear map, the attention's
    two products (q k^T, weights v) and LayerNorm's 5 flops per element."""
    def block(q, keys):  # qkv, proj, MLP, attention, two LayerNorms
        return q * d * 3 * d + q * d * d + 2 * q * d * hidden + 2 * q * keys * d + 2 * 5 * q * d
    total = 0
    for t in range(steps):
        f = t % s                                  # frame index in the segment
        if f == 0:
            if t > 0:  # the write of the previous segment, then its final LayerNorm
                total += depth * block(m, m + s * tok + m) + 5 * m * d
            # the read memory: the last block computes only its keys and values
            total += (depth - 1) * block(m, m) + m * d * 3 * d + 5 * m * d
        total += depth * block(tok, m + (f + 1) * tok) + 5 * tok * d
        total += 2 * tok * patch * d               # patch embedding and head
    return total


def test_flops_count_sdpa_and_match_the_rollout_by_hand():
    pytest.importorskip("fvcore")
    model = M.create("rmt", **TINY)
    flops = M.count_flops(model, (1, 3, 2, H, W), pred_len=2)
    assert flops == rollout_flops(d=16, depth=2, hidden=32, m=3, s=2, tok=15, patch=32, steps=4)
    # README's zoo table (profile of the presets), by the same count
    assert rollout_flops(d=64, depth=4, hidden=256, m=8, s=5, tok=64, patch=64,
                         steps=19) == 387061248
    assert rollout_flops(d=64, depth=4, hidden=256, m=8, s=2, tok=64, patch=32,
                         steps=7) == 125851136


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("override,error,match", [
    ({"dim": 18}, ValueError, "dim: expected a multiple of heads=2 and of 4"),
    ({"dim": 12, "heads": 8}, ValueError, "dim: expected a multiple of heads=8"),
    ({"bptt_depth": 0}, ValueError, "bptt_depth: expected an int >= 1"),
    ({"bptt_depth": 1.5}, ValueError, "bptt_depth: expected an int >= 1"),
    ({"segment_len": 0}, ValueError, r"segment_len: expected an int >= 1"),
    ({"memory_size": "4"}, TypeError, r"memory_size: expected an int >= 1"),
    ({"backend": "cpp"}, ValueError, "backend: RMT has no fastcells recurrent cell"),
    ({"checkpoint": "yes"}, TypeError, "checkpoint: expected true or false"),
    ({"frame_size": (10, 20)}, ValueError, "divisible by patch_size=4"),
])
def test_bad_arguments_raise(override, error, match):
    with pytest.raises(error, match=match):
        M.create("rmt", **{**TINY, **override})


def test_bad_frames_raise():
    model = tiny(torch.float32)
    with pytest.raises(ValueError, match="divisible by patch_size=4"):
        model(torch.zeros(1, 2, 2, 10, 20))
    with pytest.raises(ValueError, match=r"frames: expected shape \(B, T, 2, H, W\)"):
        model(torch.zeros(1, 2, 3, 12, 20))
    with pytest.raises(ValueError, match="x: expected shape"):
        model.cell(torch.zeros(1, 15, 8))
    with pytest.raises(ValueError, match="a segment holds 1 .. 2 frames"):
        model.cell.segment(torch.zeros(1, 3, 15, 16), model.cell.initial_memory(1))


# --- train / resume / eval / predict --------------------------------------------------------


def test_cli_train_resume_eval_predict(tmp_path):
    out = str(tmp_path / "rmt")
    args = ["train", "--model", "rmt", "--preset", "mmnist", "--model-arg", "frame_size=32",
            "--model-arg", "patch_size=8", "--model-arg", "dim=8", "--model-arg", "depth=1",
            "--model-arg", "heads=2", "--model-arg", "memory_size=2", "--model-arg",
            "segment_len=2", "--model-arg", "bptt_depth=1", "--model-arg", "checkpoint=true",
            "--input-len", "2", "--pred-len", "2", "--num-sequences", "12", "--batch-size", "4",
            "--steps", "4", "--eval-every", "2", "--checkpoint-every", "2",
            "--sampling", "scheduled", "--sampling-stop-iter", "4",
            "--sampling-changing-rate", "0.25", "--out", out]
    assert cli(args + ["--steps", "2"]) == 0
    assert cli(args + ["--resume"]) == 0
    with open(os.path.join(out, "train.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in records)
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["model_args"]["bptt_depth"] == 1 and config["model_args"]["checkpoint"]
    ckpt = os.path.join(out, "last.pt")
    assert cli(["eval", "--checkpoint", ckpt, "--batch-size", "2"]) == 0
    result = json.load(open(os.path.join(out, "eval.json")))
    assert len(result["mse_per_frame_curve"]) == 2 and 0 < result["ssim"] <= 1
    assert cli(["predict", "--checkpoint", ckpt, "--num", "1", "--out", str(tmp_path / "p")]) == 0
    assert sorted(os.listdir(tmp_path / "p")) == ["sequence_000.gif", "sequence_000.png"]
    # other lengths than the run's (trained 2 -> 2): 1 given -> 5 predicted
    assert cli(["eval", "--checkpoint", ckpt, "--batch-size", "4", "--batches", "1",
                "--input-len", "1", "--pred-len", "5"]) == 0
    result = json.load(open(os.path.join(out, "eval.json")))
    assert (result["input_len"], result["pred_len"], len(result["ssim_curve"])) == (1, 5, 5)
    assert cli(["predict", "--checkpoint", ckpt, "--num", "1", "--input-len", "3", "--pred-len",
                "4", "--out", str(tmp_path / "q")]) == 0
    assert os.path.getsize(tmp_path / "q" / "sequence_000.gif") > 0
