"""Runs that cannot be silently corrupted, and a CLI whose errors a user can act on: run
directory locks, whole-data checks, resume rules, Ctrl-C, unwritable outputs and full disks,
device checks, option values, help and version, and the small things people notice."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import fastcells
from fastcells.cli import main as cli
from fastcells.train import TrainConfig, Trainer
from fastcells.train import checkpoint as ckpt_io
from fastcells.train.rundir import LOCK_NAME, RunDirectoryLocked, RunLock
from fastcells.train.schedules import lr_factor

from .models_helpers import one_thread  # noqa: F401 (fixture)
from .test_train import tiny

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train_cli(tmp_path, *extra, out="run", steps=2):
    return ["train", "--model", "convlstm", "--model-arg", "hidden_size=4",
            "--model-arg", "num_layers=1", "--model-arg", "frame_size=32,32",
            "--input-len", "2", "--pred-len", "2", "--num-sequences", "12",
            "--batch-size", "4", "--steps", str(steps), "--eval-every", "2",
            "--checkpoint-every", "1", "--eval-batches", "1", "--out", str(tmp_path / out),
            *extra]


# ---------------------------------------------------------------- 1. run directory lock
def test_a_second_run_on_a_locked_directory_is_refused(tmp_path):
    cfg = tiny(tmp_path)
    first = Trainer(cfg, progress=False)
    assert os.path.exists(os.path.join(cfg.out_dir, LOCK_NAME))
    with pytest.raises(RunDirectoryLocked, match="in use by another Trainer in this process"):
        Trainer(cfg, progress=False, overwrite=True)
    first.fit(stop_at=3)  # releases when it returns
    assert not os.path.exists(os.path.join(cfg.out_dir, LOCK_NAME))
    Trainer(cfg, resume=True, progress=False).fit()


def test_another_process_holding_the_directory_is_named(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
         "from fastcells.train.rundir import RunLock; lock = RunLock(sys.argv[2]).acquire();"
         "print('held', flush=True); time.sleep(60)", ROOT, str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = cli(_train_cli(tmp_path))
        assert code == 2
        with pytest.raises(RunDirectoryLocked, match=f"pid {holder.pid}"):
            RunLock(str(out)).acquire()
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed without releasing: its lock is stale, reported and taken over
    lines = []
    lock = RunLock(str(out), report=lines.append).acquire()
    assert lines and "stale lock" in lines[0] and str(holder.pid) in lines[0]
    lock.release()
    assert not (out / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_taken_over_only_when_asked(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "node-that-died",
                                             "started": "yesterday"}))
    assert cli(_train_cli(tmp_path)) == 2
    assert "--break-lock" in capsys.readouterr().err  # says how to take it over
    assert cli(_train_cli(tmp_path, "--break-lock")) == 0
    assert "took over the lock" in capsys.readouterr().err
    assert not (out / LOCK_NAME).exists()


def test_a_lock_being_written_is_not_mistaken_for_a_stale_one(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text("")  # created, not yet filled by its run
    with pytest.raises(RunDirectoryLocked, match="being taken by another run"):
        RunLock(str(out)).acquire()
    old = os.path.getmtime(out / LOCK_NAME) - 3600  # an hour old: its writer died
    os.utime(out / LOCK_NAME, (old, old))
    lines = []
    RunLock(str(out), report=lines.append).acquire().release()
    assert "stale lock" in lines[0]


def test_two_cli_trainings_into_one_out_cannot_interleave(tmp_path, capsys):
    """The second is refused (in use, or a run already there): one row per step."""
    assert cli(_train_cli(tmp_path)) == 0
    assert cli(_train_cli(tmp_path)) == 2
    assert "already holds a run" in capsys.readouterr().err
    with open(tmp_path / "run" / "train.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == [1, 2]


def test_orphan_temporary_saves_are_removed_on_the_next_start(tmp_path, capsys):
    cfg = tiny(tmp_path)
    Trainer(cfg, progress=False).fit(stop_at=3)
    orphan = os.path.join(cfg.out_dir, ".tmp-abc123.pt")
    with open(orphan, "wb") as f:
        f.write(b"half a checkpoint")
    Trainer(cfg, resume=True, progress=False).close()
    assert not os.path.exists(orphan)
    assert "unfinished checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------- 2. the whole data checked
def _npy(tmp_path, bad=None, n=12, name="seq.npy"):
    """(N, T, 1, 16, 16) uint8 sequences; ``bad(arr)`` spoils some after the first."""
    arr = np.random.default_rng(0).random((n, 4, 1, 16, 16)).astype(np.float32)
    if bad:
        bad(arr)
    path = tmp_path / name
    np.save(path, arr)
    return str(path)


def _npy_cfg(tmp_path, path, **changes):
    changes.setdefault("model_args", {"hidden_size": 4, "num_layers": 1, "frame_size": 16})
    return tiny(tmp_path, data=f"npy:{path}", input_len=2, pred_len=2, **changes)


@pytest.mark.parametrize("spoil,message", [
    (lambda a: a.__setitem__(slice(7, 9), a[7:9] * 255),
     r"sequence 7 .* values in \[0\.\d+, 25\d"),
    (lambda a: a.__setitem__(slice(5, 6), a[5:6] * 2 - 1),
     r"sequence 5 .* values in \[-0\.9\d*, 0\.9"),
    (lambda a: a.__setitem__((10, 2, 0, 3, 3), np.nan), r"sequence 10 .* NaN"),
])
def test_every_sequence_of_an_array_is_checked_before_training(tmp_path, spoil, message):
    path = _npy(tmp_path, spoil)
    with pytest.raises(ValueError, match=message):
        Trainer(_npy_cfg(tmp_path, path), progress=False)
    assert not os.path.exists(tmp_path / "run" / "last.pt")
    assert not os.path.exists(tmp_path / "run" / "best.pt")


def test_memory_mapped_arrays_are_checked_in_chunks(tmp_path, monkeypatch):
    from fastcells.data import checks

    monkeypatch.setattr(checks, "CHUNK_BYTES", 1)  # one sequence per chunk
    path = _npy(tmp_path, lambda a: a.__setitem__((11, 0, 0, 0, 0), np.inf))
    ds = fastcells.data.build_dataset(f"npy:{path}", seq_len=4)
    with pytest.raises(ValueError, match="sequence 11 .* NaN or infinite"):
        checks.check_values(ds, "npy")
    checks.check_values(fastcells.data.build_dataset(f"npy:{_npy(tmp_path, name='ok.npy')}",
                                                     seq_len=4))


def test_a_folder_is_read_once_before_training_naming_the_bad_file(tmp_path):
    from PIL import Image

    root = tmp_path / "frames"
    for s in range(3):
        (root / f"seq{s}").mkdir(parents=True)
        for t in range(4):
            img = np.full((16, 16), 40 * t, np.uint8)
            Image.fromarray(img).save(root / f"seq{s}" / f"{t:03d}.png")
    ds = fastcells.data.build_dataset(f"folder:{root}", seq_len=4)
    fastcells.data.check_values(ds, "folder", progress=False)
    (root / "seq2" / "002.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="seq2/002.png"):
        fastcells.data.check_values(ds, "folder", progress=False)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "seq2" / "002.png")
    with pytest.raises(ValueError, match=r"seq2/002.png.* shape .*\(1, 8, 8\)"):
        fastcells.data.check_values(ds, "folder", progress=False)


def test_frame_shape_mismatch_says_the_exact_fix(tmp_path):
    arr = np.random.default_rng(0).random((12, 4, 3, 24, 20)).astype(np.float32)
    np.save(tmp_path / "rgb.npy", arr)
    cfg = _npy_cfg(tmp_path, tmp_path / "rgb.npy")
    with pytest.raises(ValueError, match=r"--model-arg frame_size=24,20 --model-arg "
                                         r"frame_channels=3"):
        Trainer(cfg, progress=False)
    fixed = _npy_cfg(tmp_path, tmp_path / "rgb.npy", model_args={
        "hidden_size": 4, "num_layers": 1, "frame_size": [24, 20], "frame_channels": 3})
    Trainer(fixed, progress=False, overwrite=True).close()


# ---------------------------------------------------------------- 4. resume with changes
def test_more_steps_on_resume_rebuild_the_schedule(tmp_path):
    cfg = tiny(tmp_path, schedule="cosine", steps=6)
    Trainer(cfg, progress=False).fit()
    longer = tiny(tmp_path, schedule="cosine", steps=9)
    trainer = Trainer(longer, resume=True, progress=False)
    # the next update's lr is the 9-step schedule's at step 6, not the finished run's 0
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(
        longer.lr * lr_factor(longer, 6))
    trainer.fit()
    with open(tmp_path / "run" / "train.jsonl") as f:
        lrs = {r["step"]: r["lr"] for r in map(json.loads, f)}
    for step in (7, 8, 9):
        assert lrs[step] == pytest.approx(longer.lr * lr_factor(longer, step - 1))
    assert lrs[7] > 0
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["steps"] == 9  # true to what ran


def test_resume_refuses_changed_settings_listing_them(tmp_path):
    Trainer(tiny(tmp_path), progress=False).fit(stop_at=3)
    changed = tiny(tmp_path, lr=0.01, clip_grad=1.0)
    with pytest.raises(ValueError, match=r"lr: checkpoint 0.001, now 0.01; clip_grad"):
        Trainer(changed, resume=True, progress=False)
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["lr"] == 0.001  # untouched by the refused resume
    Trainer(tiny(tmp_path, eval_every=1), resume=True, progress=False).close()  # may change


def test_checkpoints_with_an_override_now_refused_still_load(tmp_path, recwarn):
    """A run saved before create() refused overrides its model ignores (here kernel_sizes
    on convlstm) still resumes and evaluates: the override is dropped, with a warning."""
    cfg = tiny(tmp_path, steps=3)
    Trainer(cfg, progress=False).fit()
    path = os.path.join(cfg.out_dir, "last.pt")
    saved = torch.load(path, weights_only=False)
    saved["config"]["model_args"]["kernel_sizes"] = [7, 9]
    torch.save(saved, path)
    with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:
        json.dump(saved["config"], f)
    assert cli(["eval", "--checkpoint", path, "--batches", "1",
                "--out", str(tmp_path / "eval")]) == 0
    old = TrainConfig.from_dict({**saved["config"], "steps": 4})
    Trainer(old, resume=True, progress=False).fit()
    assert any("kernel_sizes: model 'convlstm' does not read" in str(w.message)
               for w in recwarn)
    with pytest.raises(TypeError, match="does not take"):  # a new run still refuses it
        Trainer(TrainConfig.from_dict({**saved["config"], "out_dir": str(tmp_path / "new")}),
                progress=False)


# ------------------------------------------------------------------------ 5. Ctrl-C
def test_ctrl_c_says_where_it_stopped_and_exits_130(tmp_path, monkeypatch, capsys):
    real = Trainer.train_step

    def interrupted(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    assert cli(_train_cli(tmp_path, steps=5)) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fastcells train: stopped at step 2; last checkpoint step 2")
    assert "--resume" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run" / LOCK_NAME).exists()


# --------------------------------------------------- 6. unwritable outputs, full disks
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    assert cli(_train_cli(tmp)) == 0
    return tmp / "run"


def test_eval_predict_bench_check_their_output_place_first(run_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"  # a file where a folder should be: unwritable, even as root
    blocker.write_text("")
    ckpt = str(run_dir / "last.pt")
    assert cli(["eval", "--checkpoint", ckpt, "--out", str(blocker / "x"),
                "--batches", "1"]) == 2
    captured = capsys.readouterr()
    assert "cannot write eval.json" in captured.err
    assert json.loads(captured.out.strip().splitlines()[0])["mse_per_frame"] > 0  # printed
    assert cli(["predict", "--checkpoint", ckpt, "--out", str(blocker / "x")]) == 2
    assert "cannot write the predictions" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["bench", "kernels", "--quick", "--out", str(blocker / "x")])
    assert "--out: cannot write" in capsys.readouterr().err


def test_a_full_disk_while_saving_says_so(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    ckpt_io.save_atomic({"model": {}, "config": {}}, path)

    def full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="disk is full .* still holds the previous checkpoint"):
        ckpt_io.save_atomic({"model": {}, "config": {}}, path)
    assert ckpt_io.load(path) == {"model": {}, "config": {}}  # intact
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []


# ------------------------------------------------------------------------ 7. devices
@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("device,message", [("tpu", "expected cpu, cuda or cuda:N"),
                                            ("cuda:7", "cuda")])
def test_eval_and_predict_check_the_device(run_dir, capsys, command, device, message):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    assert cli([command, "--checkpoint", str(run_dir / "last.pt"), "--device", device]) == 2
    err = capsys.readouterr().err
    assert f"fastcells {command}: error: device:" in err and message in err
    assert "Traceback" not in err


# ----------------------------------------------------------------- 8. option values
@pytest.mark.parametrize("argv,message", [
    (["eval", "--checkpoint", "x.pt", "--batch-size", "0"],
     "--batch-size: expected an integer >= 1"),
    (["eval", "--checkpoint", "x.pt", "--batches", "0"], "--batches: expected an integer >= 1"),
    (["eval", "--checkpoint", "x.pt", "--thresholds", "abc"], "--thresholds: expected numbers"),
    (["predict", "--checkpoint", "x.pt", "--num", "0"], "--num: expected an integer >= 1"),
    (["predict", "--checkpoint", "x.pt", "--num", "-1"], "--num: expected an integer >= 1"),
])
def test_bad_option_values_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--clip-grad", "-1"], "clip_grad must be >= 0"),
    (["--input-len", "0"], "input_len: expected an int >= 1, got 0"),
    (["--model-arg", 'hidden_size="8"'], "hidden_size: expected an int >= 1, got '8'"),
    (["--model-arg", "hidden_size=-3"], "hidden_size: expected an int >= 1, got -3"),
    (["--model-arg", "kernel_sizes=7,9"], "kernel_sizes: model 'convlstm' does not take"),
])
def test_bad_train_values_name_the_setting(tmp_path, extra, message, capsys):
    assert cli(_train_cli(tmp_path, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.json").exists()


def test_model_arg_lists_in_both_forms(tmp_path):
    from fastcells.cli import _parse_value

    assert _parse_value("32,32") == [32, 32] == _parse_value("[32,32]")
    assert _parse_value("8") == 8 and _parse_value("abc") == "abc"


def test_config_file_values_are_type_checked(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"ema_decay": "0.5"}))
    assert cli(_train_cli(tmp_path, "--config", str(config))) == 2
    assert "ema_decay: expected a number, got '0.5' (str)" in capsys.readouterr().err


def test_predict_says_how_many_it_wrote(run_dir, tmp_path, capsys):
    out = tmp_path / "pred"
    assert cli(["predict", "--checkpoint", str(run_dir / "last.pt"), "--num", "50",
                "--out", str(out)]) == 0
    written = len([p for p in os.listdir(out) if p.endswith(".png")])
    assert 0 < written < 50
    assert f"wrote {written} of the 50 sequences asked for" in capsys.readouterr().err


# ---------------------------------------------------------------- 11. help and version
def test_help_version_and_bare_command():
    def run(*argv):
        return subprocess.run([sys.executable, "-m", "fastcells", *argv], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    bare = run()
    assert bare.returncode == 0 and "usage: fastcells" in bare.stdout and "train" in bare.stdout
    version = run("--version")
    assert version.stdout.strip() == f"fastcells {fastcells.__version__}"
    train = run("train", "--help").stdout
    from fastcells.train.config import FIELD_HELP
    for text in FIELD_HELP.values():  # every option described, with its allowed values
        assert " ".join(text.split()[:3]) in " ".join(train.split()), text
    assert "{constant,cosine,onecycle,cyclic}" in train
    bench = run("bench", "--help").stdout
    assert "--quick" in bench.split("Options without a command")[1]


# ------------------------------------------------------- 12. README's imports and words
def test_subpackages_the_readme_uses_come_with_import_fastcells():
    code = ("import fastcells; fastcells.utils.saved_tensor_bytes; fastcells.metrics; "
            "fastcells.data.build_dataset; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert "return_deltas=True)` (a forward argument)" in readme


# ----------------------------------------------------------------- 13. small things
def test_bench_flags_load_and_impossible_floor_fractions():
    from fastcells.bench.kernels import floor_percent, load_warning

    assert floor_percent(0.42) == "42%"
    assert "measurement error" in floor_percent(1.3)
    assert load_warning({"cpu_count": 2, "load_average": [1.0, 1, 1]}) == []
    assert "not trustworthy" in load_warning({"cpu_count": 2, "load_average": [2.9, 2, 2]})[0]
    # a run's own thread per core reads a few hundredths above the cores; another job more
    assert load_warning({"cpu_count": 2, "load_average": [1.9, 1, 1],
                         "load_average_end": [2.05, 2, 2]}) == []
    assert load_warning({"cpu_count": 2, "load_average": [1.9, 1, 1],
                         "load_average_end": [2.3, 2, 2]})


def test_demo_says_when_the_run_did_not_improve():
    from fastcells.demo import improvement_line

    assert "did not improve" in improvement_line(225.38, 225.38)
    assert "-0%" not in improvement_line(225.38, 225.38)
    assert "made it worse" in improvement_line(100.0, 150.0)
    assert "(50% lower)" in improvement_line(100.0, 50.0)


def test_gif_is_upscaled_and_labelled(tmp_path):
    from PIL import Image

    from fastcells.train import plots

    truth = np.random.default_rng(0).random((3, 1, 16, 16))
    plots.prediction_gif(truth, truth, str(tmp_path / "p.gif"))
    with Image.open(tmp_path / "p.gif") as gif:
        assert gif.height >= plots.GIF_MIN_SIDE and gif.n_frames == 3
        top = np.asarray(gif.convert("L"))[:18]
    assert (top < 128).any()  # the label row holds text


def test_eval_json_is_strict(run_dir, tmp_path, monkeypatch):
    import fastcells.train as train_pkg

    original = train_pkg.evaluate_model

    def with_nan(*a, **k):
        result = original(*a, **k)
        result["ssim"] = float("nan")
        return result

    monkeypatch.setattr(train_pkg, "evaluate_model", with_nan)
    assert cli(["eval", "--checkpoint", str(run_dir / "last.pt"), "--out", str(tmp_path),
                "--batches", "1"]) == 0
    text = (tmp_path / "eval.json").read_text()
    assert "NaN" not in text and json.loads(text)["ssim"] is None


def test_the_loss_plot_labels_its_axes(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from fastcells.train import plots

    labels = {}
    monkeypatch.setattr(Figure, "savefig", lambda self, path, **k: labels.update(
        x=self.axes[0].get_xlabel(), y=self.axes[0].get_ylabel()))
    plots.loss_curves([{"step": 1, "loss": 1.0}], [{"step": 1, "mse_per_pixel": 0.5}],
                      str(tmp_path / "l.png"))
    assert labels == {"x": "step", "y": "loss / MSE (log scale)"}
