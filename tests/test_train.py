"""Trainer, checkpoints, exact resume, DDP on gloo, NaN handling, the CLI end to end."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastcells.cli import main as cli
from fastcells.train import TrainConfig, Trainer, TrainingDiverged
from fastcells.train import checkpoint as ckpt_io
from fastcells.train.schedules import lr_factor

from .conftest import requires_cpp
from .models_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(model="convlstm", preset="mmnist",
            model_args={"hidden_size": 4, "num_layers": 2, "frame_size": 32},
            input_len=3, pred_len=3, num_sequences=24, batch_size=4, steps=6, eval_every=3,
            checkpoint_every=3, eval_batches=1)


def tiny(tmp_path, name="run", **changes) -> TrainConfig:
    return TrainConfig(**{**TINY, "out_dir": str(tmp_path / name), **changes})


def losses(out_dir) -> list[float]:
    with open(os.path.join(out_dir, "train.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


def test_config_rejects_bad_values():
    for bad in ({"optimizer": "sgd"}, {"schedule": "step"}, {"precision": "fp8"},
                {"sampling": "random"}, {"steps": 0}, {"val_fraction": 1.0}, {"lr": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({"stepz": 3})


def test_schedules_at_chosen_steps():
    def f(schedule, step, **kw):
        return lr_factor(TrainConfig(schedule=schedule, steps=100, **kw), step)

    assert f("constant", 0, warmup_steps=4) == 0.25 and f("constant", 50, warmup_steps=4) == 1
    assert f("cosine", 0) == 1 and f("cosine", 50) == pytest.approx(0.5)
    assert f("cosine", 100, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert f("onecycle", 0) == pytest.approx(1 / 25) and f("onecycle", 30) == pytest.approx(1)
    assert f("onecycle", 100) == pytest.approx(0)
    # cyclic starts at the peak (where a warm-up ends), then down and up again
    assert f("cyclic", 0, cycle_steps=10) == 1 and f("cyclic", 5, cycle_steps=10) == 0
    assert f("cyclic", 10, cycle_steps=10) == 1 and f("cyclic", 12, cycle_steps=10) == \
        pytest.approx(0.6)
    assert f("cyclic", 2, warmup_steps=2, cycle_steps=10) == 1


# e_convlstm has dropout (global RNG), scheduled sampling draws masks, EMA, accumulation,
# clipping and a cosine schedule: every piece of state a resume must restore.
RESUMABLE = dict(model="e_convlstm", model_args={"hidden_size": 4, "num_layers": 2,
                                                  "frame_size": 32},
                 sampling="scheduled", sampling_changing_rate=0.1, sampling_stop_iter=8,
                 ema_decay=0.9, accum_steps=2, clip_grad=0.5, schedule="cosine",
                 warmup_steps=2, l1_weight=0.5)


def test_resume_continues_exactly(tmp_path):
    straight = Trainer(tiny(tmp_path, "a", **RESUMABLE), progress=False)
    straight.fit()
    # checkpoints every 2 steps and dies after step 3: step 3's records are redone on resume
    interrupted = Trainer(tiny(tmp_path, "b", checkpoint_every=2, **RESUMABLE), progress=False)
    step = interrupted.train_step

    def dying_step():
        if interrupted.step == 3:
            raise KeyboardInterrupt
        return step()

    interrupted.train_step = dying_step
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = Trainer(tiny(tmp_path, "b", **RESUMABLE), resume=True, progress=False)
    assert resumed.step == 2
    resumed.fit()
    with open(tmp_path / "b" / "val.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [0, 3, 6]
    assert len(losses(tmp_path / "a")) == 6
    assert losses(tmp_path / "b") == losses(tmp_path / "a")  # bit-identical
    for p, q in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(resumed.ema.module.parameters(), straight.ema.module.parameters()):
        assert torch.equal(p, q)


def test_fp16_resume_with_clipping_continues_exactly(tmp_path):
    changes = dict(precision="fp16", clip_grad=0.1, steps=4, checkpoint_every=2)
    straight = Trainer(tiny(tmp_path, "a", **changes), progress=False)
    straight.fit()
    Trainer(tiny(tmp_path, "b", **changes), progress=False).fit(stop_at=2)
    resumed = Trainer(tiny(tmp_path, "b", **changes), resume=True, progress=False)
    fresh_scale = Trainer(tiny(tmp_path, "b2", **changes), progress=False).scaler.get_scale()
    assert resumed.scaler.get_scale() < fresh_scale  # the scale it had backed off to
    resumed.fit()
    assert losses(tmp_path / "b") == losses(tmp_path / "a")


def test_accumulation_equals_the_larger_batch_and_eval_uses_ema(tmp_path, monkeypatch):
    accum = Trainer(tiny(tmp_path, "accum", batch_size=2, accum_steps=2, steps=3,
                         ema_decay=0.5), progress=False)
    accum.fit()
    whole = Trainer(tiny(tmp_path, "whole", steps=3), progress=False)
    whole.fit()
    for p, q in zip(accum.model.parameters(), whole.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    import fastcells.train.trainer as trainer_module
    seen = []
    monkeypatch.setattr(trainer_module, "evaluate_model",
                        lambda model, *a, **k: seen.append(model) or {"mse_per_frame": 1.0})
    accum.evaluate()
    assert seen == [accum.ema.module]
    assert any(not torch.equal(p, q) for p, q in zip(accum.ema.module.parameters(),
                                                     accum.model.parameters()))


def test_resume_refuses_another_model_and_a_fresh_run_refuses_an_existing_one(tmp_path):
    Trainer(tiny(tmp_path, steps=3), progress=False).fit()
    with pytest.raises(ValueError, match="model: checkpoint 'convlstm', now 'sms_lstm'"):
        Trainer(tiny(tmp_path, model="sms_lstm", steps=3), resume=True, progress=False)
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(tiny(tmp_path, steps=3), progress=False)
    Trainer(tiny(tmp_path, steps=3), progress=False, overwrite=True)
    with pytest.raises(FileNotFoundError, match="no file"):
        Trainer(tiny(tmp_path, "empty"), resume=True, progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = Trainer(tiny(tmp_path, checkpoint_every=2), progress=False)
    trainer.fit(stop_at=2)
    path = os.path.join(trainer.cfg.out_dir, "last.pt")
    good = os.path.getmtime(path)
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="at step 3.*last good checkpoint"):
        trainer.fit()
    assert os.path.getmtime(path) == good
    saved = ckpt_io.load(path)
    assert saved["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_non_finite_gradients_stop_before_the_weights_change(tmp_path):
    trainer = Trainer(tiny(tmp_path, checkpoint_every=1), progress=False)
    trainer.fit(stop_at=1)
    p = next(trainer.model.parameters())
    p.register_hook(lambda g: g * float("inf"))
    with pytest.raises(TrainingDiverged, match="gradient norm is .* at step 2"):
        trainer.fit()
    saved = ckpt_io.load(os.path.join(trainer.cfg.out_dir, "last.pt"))
    assert saved["step"] == 1 and all(torch.isfinite(v).all() for v in saved["model"].values())
    assert torch.isfinite(p).all()


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    path = str(tmp_path / "ck.pt")
    ckpt_io.save_atomic({"model": {}, "config": {}, "n": 1}, path)

    def broken(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        ckpt_io.save_atomic({"model": {}, "config": {}, "n": 2}, path)
    monkeypatch.undo()
    assert ckpt_io.load(path)["n"] == 1
    assert os.listdir(tmp_path) == ["ck.pt"]  # no temporary file left behind
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        ckpt_io.load(str(tmp_path / "junk.pt"))


def test_mixed_precision_and_checkpointed_layers_train(tmp_path):
    for precision in ("bf16", "fp16"):
        trainer = Trainer(tiny(tmp_path, precision, precision=precision, steps=2,
                               checkpoint_layers=[1], temporal_weight=0.1), progress=False)
        cells = [m for m in trainer.model.modules() if hasattr(m, "memory_efficient")]
        assert [c.memory_efficient for c in cells] == [False, True]
        assert trainer.scaler.is_enabled() == (precision == "fp16")
        trainer.fit()
        assert all(math.isfinite(x) for x in losses(trainer.cfg.out_dir))
    with pytest.raises(ValueError, match="checkpoint_layers"):
        Trainer(tiny(tmp_path, "bad", checkpoint_layers=[5]), progress=False)


def test_unwritable_out_dir_and_bad_data(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="out_dir"):
        Trainer(tiny(tmp_path, out_dir=str(blocker / "run")), progress=False)
    with pytest.raises(FileNotFoundError):
        Trainer(tiny(tmp_path, "npy", data=f"npy:{tmp_path / 'missing.npy'}"), progress=False)
    np.save(tmp_path / "rgb.npy", np.zeros((8, 6, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"\(C, H, W\) = \(3, 32, 32\); the model is built "
                                         r"for \(1, 32, 32\).*frame_channels=3"):
        Trainer(tiny(tmp_path, "rgb", data=f"npy:{tmp_path / 'rgb.npy'}"), progress=False)
    np.save(tmp_path / "bytes.npy", np.full((8, 6, 1, 32, 32), 255.0, np.float32))
    with pytest.raises(ValueError, match=r"values in \[255, 255\].*\[0, 1\]"):
        Trainer(tiny(tmp_path, "bytes", data=f"npy:{tmp_path / 'bytes.npy'}"), progress=False)
    with pytest.raises(ValueError, match="temporal_weight"):
        Trainer(tiny(tmp_path, "tc", model="e_convlstm", temporal_weight=0.1), progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = TrainConfig(**{**TINY, "batch_size": 2, "steps": 3, "out_dir": out_dir})
    trainer = Trainer(cfg, progress=False)
    trainer.fit()
    torch.save([p.detach() for p in trainer.model.parameters()],
               os.path.join(out_dir, f"params{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_ddp_on_gloo_matches_one_process_with_the_global_batch(tmp_path):
    """2 processes x batch 2 take the same steps as 1 process x batch 4 (DDP averages)."""
    out = str(tmp_path / "ddp")
    os.makedirs(out)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), out), nprocs=2)
    p0, p1 = (torch.load(os.path.join(out, f"params{r}.pt")) for r in (0, 1))
    single = Trainer(tiny(tmp_path, "single", steps=3), progress=False)
    single.fit()
    for a, b, c in zip(p0, p1, single.model.parameters()):
        assert torch.equal(a, b)  # the ranks stay in sync
        torch.testing.assert_close(a, c.detach(), rtol=1e-5, atol=1e-6)
    assert os.path.exists(os.path.join(out, "last.pt"))  # rank 0 wrote it


def test_cli_end_to_end(tmp_path, capsys):
    out = str(tmp_path / "cli")
    args = ["train", "--model", "convlstm", "--preset", "mmnist", "--model-arg", "hidden_size=4",
            "--model-arg", "num_layers=1", "--model-arg", "frame_size=32", "--input-len", "3",
            "--pred-len", "2", "--num-sequences", "16", "--batch-size", "4", "--steps", "4",
            "--eval-every", "2", "--checkpoint-every", "2", "--out", out]
    assert cli(args + ["--steps", "2"]) == 0
    assert cli(args + ["--resume"]) == 0  # continues to step 4
    assert [json.loads(line)["step"] for line in open(os.path.join(out, "train.jsonl"))] == \
        [1, 2, 3, 4]
    for name in ("last.pt", "best.pt", "train.csv", "val.jsonl", "val.csv", "config.json",
                 "loss_curves.png", "per_frame_metrics.png", "predictions.png",
                 "predictions.gif"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    ckpt = os.path.join(out, "last.pt")
    assert cli(["eval", "--checkpoint", ckpt, "--batch-size", "2", "--thresholds", "0.3,0.6"]) == 0
    result = json.load(open(os.path.join(out, "eval.json")))
    assert len(result["ssim_curve"]) == 2 and 0 < result["ssim"] <= 1
    assert "csi@0.3" in result and "hss@0.6" in result
    assert cli(["predict", "--checkpoint", ckpt, "--num", "2", "--out", str(tmp_path / "p")]) == 0
    assert sorted(os.listdir(tmp_path / "p")) == [
        "sequence_000.gif", "sequence_000.png", "sequence_001.gif", "sequence_001.png"]
    assert cli(["info"]) == 0
    assert "backends available: reference" in capsys.readouterr().out
    assert cli(args + ["--overwrite", "--data", "npy:/nonexistent.npy"]) == 2
    assert "nonexistent.npy" in capsys.readouterr().err
    assert cli(["eval", "--checkpoint", str(tmp_path / "none.pt")]) == 2


def test_eval_lengths_are_checked_against_the_model():
    """fastcells eval/predict --input-len/--pred-len: any lengths for a recurrent model,
    STLight only its own input_len (its first layer reads exactly that many frames)."""
    from fastcells import models
    from fastcells.cli import _check_lengths

    rnn = models.create("convlstm", preset="mmnist", hidden_size=4, num_layers=1)
    _check_lengths(rnn, "convlstm", 2, 28)
    stlight = models.create("stlight", frame_channels=1, dim=8, depth=1, input_len=3,
                            pred_len=2)
    _check_lengths(stlight, "stlight", 3, 7)
    _check_lengths(stlight, "stlight", None, 7)
    with pytest.raises(ValueError, match="--input-len: stlight reads exactly its input_len = 3 "
                                         "frames"):
        _check_lengths(stlight, "stlight", 2, None)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="--pred-len: expected an int >= 1"):
            _check_lengths(rnn, "convlstm", 3, bad)
    with pytest.raises(SystemExit):  # argparse: an int >= 1
        cli(["eval", "--checkpoint", "x.pt", "--pred-len", "0"])


def test_console_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "fastcells", "info"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "backends available" in done.stdout


def test_early_stopping_counts_evaluations_without_improvement(tmp_path, monkeypatch):
    trainer = Trainer(tiny(tmp_path, steps=10, eval_every=1, early_stopping=2), progress=False)
    scores = iter([200.0, 100.0, 90.0, 95.0, 91.0, 80.0])

    def fake_eval(max_batches=None):
        return {"step": trainer.step, "mse_per_frame": next(scores)}

    monkeypatch.setattr(trainer, "evaluate", fake_eval)
    monkeypatch.setattr(trainer, "plot", lambda val=None: None)
    trainer.fit()
    assert trainer.step == 4  # 90 at step 2 is the best; 95 and 91 are two misses
    assert trainer.best_val == 90.0
    assert ckpt_io.load(os.path.join(trainer.cfg.out_dir, "best.pt"))["step"] == 2
    resumed = Trainer(trainer.cfg, resume=True, progress=False)  # it had stopped: stays so
    assert resumed.fit() is None and resumed.step == 4


@requires_cpp
def test_cli_bench_runs(tmp_path):
    path = str(tmp_path / "bench.json")
    assert cli(["bench", "kernels", "--quick", "--size", "1", "4", "8", "8", "--repeats", "1",
                "--cells", "convlstm", "--no-progress", "--json", path]) == 0
    assert "convlstm" in json.load(open(path))["rows"][0]["cell"]
