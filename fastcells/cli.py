"""The ``fastcells`` command (also ``python -m fastcells``).

    fastcells demo                      train ms_lstm on synthetic data, report fused vs reference
    fastcells train --model convlstm --preset mmnist --steps 300 --out runs/convlstm
    fastcells train --out runs/convlstm --resume          continue exactly where it stopped
    fastcells eval --checkpoint runs/convlstm/last.pt [--input-len 2 --pred-len 28]
    fastcells predict --checkpoint runs/convlstm/last.pt --num 4
    fastcells bench [--quick]           kernel and training-cost benchmarks (fastcells.bench)
    fastcells info                      backends, versions, devices

Every field of :class:`fastcells.train.TrainConfig` is a ``train`` option
(``--batch-size``, ``--schedule cosine``, ``--precision bf16``, ...); ``--model-arg
hidden_size=16`` passes constructor overrides to the model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from ._argtypes import ensure_writable_dir, positive_int
from ._checks import check_device
from .utils.jsonio import strict_dumps


def _parse_value(text: str):
    """A --model-arg value: JSON (8, 0.5, [32, 32], "name", true), or ints separated by
    commas (32,32 for [32, 32]), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    parts = text.split(",")
    if len(parts) > 1 and all(p.strip().lstrip("-").isdigit() for p in parts):
        return [int(p) for p in parts]
    return text


def _thresholds(text: str) -> list:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, e.g. 0.3,0.5, "
                                         f"got {text!r}")


def _writable_dir(path: str, what: str) -> str:
    """``path`` created if needed and writable, checked before any work; else a
    PermissionError naming it and what was to be written there."""
    try:
        return ensure_writable_dir(path)
    except OSError as e:
        raise PermissionError(f"--out: cannot write {what} to {path!r} ({e.strerror or e}); "
                              f"pick a writable --out") from e


def _key_value(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key, _parse_value(value)


def _layers(text: str):
    if text == "all":
        return "all"
    try:
        return [int(i) for i in text.split(",") if i]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or indices like 0,2, got {text!r}")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    from .train import TrainConfig
    from .train.config import FIELD_HELP, OPTIMIZERS, PRECISIONS, SAMPLING, SCHEDULES

    choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "sampling": SAMPLING,
               "precision": PRECISIONS}
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("model_args", "checkpoint_layers", "tensorboard", "out_dir"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = TrainConfig.__dataclass_fields__[f.name].default
        kind = {int: int, float: float}.get(type(default), None)
        if f.name in ("input_len", "pred_len"):
            kind = int
        parser.add_argument(flag, dest=f.name, type=kind or str, default=None,
                            choices=choices.get(f.name),
                            help=f"{FIELD_HELP[f.name]} (default {default!r})")
    parser.add_argument("--model-arg", dest="model_args", action="append", type=_key_value,
                        default=[], metavar="KEY=VALUE",
                        help="model constructor override, e.g. hidden_size=16 (repeatable)")
    parser.add_argument("--checkpoint-layers", type=_layers, default=None,
                        help="recurrent layers that recompute in backward: 'all' or 0,2")
    parser.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard")
    parser.add_argument("--config", help="a JSON file of TrainConfig fields (flags win)")


def _config_from(args):
    from .train import TrainConfig

    values = {}
    if args.config:
        with open(args.config) as f:
            values.update(json.load(f))
    for f in dataclasses.fields(TrainConfig):
        given = getattr(args, f.name, None)
        if f.name == "model_args":
            if given:
                values["model_args"] = {**values.get("model_args", {}), **dict(given)}
        elif f.name == "tensorboard":
            values["tensorboard"] = bool(given) or values.get("tensorboard", False)
        elif given is not None:
            values[f.name] = given
    if getattr(args, "preset", None) == "none":
        values["preset"] = None
    values["out_dir"] = args.out
    return TrainConfig.from_dict(values)


def cmd_train(args) -> int:
    from .train import Trainer

    cfg = _config_from(args)
    if args.resume:
        saved = os.path.join(cfg.out_dir, "config.json")
        if not args.config and os.path.exists(saved):  # resume the saved run's settings
            cfg = _config_from(argparse.Namespace(**{**vars(args), "config": saved}))
    trainer = Trainer(cfg, resume=args.resume or False, overwrite=args.overwrite,
                      break_lock=args.break_lock)
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        last, path = trainer.last_checkpoint_step, trainer.last_checkpoint_path
        resume = "--resume" if path == os.path.join(cfg.out_dir, "last.pt") else \
            f"--resume {path}"
        saved = (f"last checkpoint step {last} ({path}); continue with `fastcells train "
                 f"--out {cfg.out_dir} {resume}`" if last is not None else
                 "no checkpoint written yet; start again with --overwrite")
        print(f"fastcells train: stopped at step {trainer.step}; {saved}", file=sys.stderr)
        return 130
    if result is not None:
        print(strict_dumps({k: v for k, v in result.items() if not k.endswith("_curve")}))
    print(f"wrote {cfg.out_dir}/ (last.pt, best.pt, train/val logs, plots)")
    return 0


def _load_run(checkpoint: str, data: str | None, device: str, input_len: int | None = None,
              pred_len: int | None = None):
    """Model (EMA weights when the run kept them), config and validation set of a run,
    with sequences of ``input_len + pred_len`` frames (default: the run's lengths)."""

    from . import data as fc_data
    from . import models
    from .train import TrainConfig
    from .train.checkpoint import load
    from .train.trainer import run_dataset

    device = check_device(device)
    saved = load(checkpoint)
    cfg = TrainConfig.from_dict(saved["config"])
    model = models.create(cfg.model, preset=cfg.preset, backend=cfg.backend,
                          **models.without_ignored_overrides(cfg.model, cfg.model_args))
    model.load_state_dict(saved["ema"] if saved.get("ema") else saved["model"])
    model.to(device).eval()
    _check_lengths(model, cfg.model, input_len, pred_len)
    input_len = input_len or cfg.input_len or model.input_len
    pred_len = pred_len or cfg.pred_len or model.pred_len
    dataset = run_dataset(cfg, model, input_len + pred_len, data)
    if data is None or data == cfg.data:  # the run's own validation split
        _, dataset = fc_data.split(dataset, cfg.val_fraction, cfg.seed)
    return model, cfg, dataset, input_len, pred_len


def _check_lengths(model, name: str, input_len: int | None, pred_len: int | None) -> None:
    """--input-len / --pred-len against what the model can do: a recurrent model reads any
    number of frames and rolls out any number; VDT samples clip after clip (each reading at
    most its input_len last frames); STLight reads exactly its input_len frames."""
    from .models import STLight

    for flag, value in (("--input-len", input_len), ("--pred-len", pred_len)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{flag}: expected an int >= 1, got {value!r}")
    if isinstance(model, STLight) and input_len is not None and input_len != model.input_len:
        raise ValueError(f"--input-len: {name} reads exactly its input_len = {model.input_len} "
                         f"frames (its first layer is built for them), got {input_len}")


def cmd_eval(args) -> int:

    from .metrics import FVD, LPIPS
    from .train import evaluate_model
    from .train.plots import per_frame_metrics

    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    try:  # checked before the work; the metrics are printed either way
        _writable_dir(out, "eval.json")
        unwritable = None
    except PermissionError as e:
        unwritable = e
        print(f"fastcells eval: warning: {e}; the metrics will only be printed",
              file=sys.stderr)
    model, _, dataset, input_len, pred_len = _load_run(args.checkpoint, args.data, args.device,
                                                       args.input_len, args.pred_len)
    device = next(model.parameters()).device
    lpips = (LPIPS(args.lpips_weights, net=args.lpips_net).to(device)
             if args.lpips_weights else None)
    fvd = FVD(args.fvd_detector, device=device) if args.fvd_detector else None
    result = evaluate_model(model, dataset, input_len, pred_len, args.batch_size,
                            device, args.batches, progress=True,
                            thresholds=args.thresholds, lpips=lpips, fvd=fvd,
                            fvd_videos=args.fvd_videos)
    result = {"input_len": input_len, "pred_len": pred_len, **result}  # what was evaluated
    print(strict_dumps({k: v for k, v in result.items() if not k.endswith("_curve")}))
    if unwritable is not None:
        raise unwritable
    with open(os.path.join(out, "eval.json"), "w") as f:
        f.write(strict_dumps(result, indent=1))
    per_frame_metrics({k: result[f"{k}_curve"] for k in ("mse_per_frame", "ssim", "psnr")},
                      os.path.join(out, "eval_per_frame.png"))
    print(f"wrote {out}/eval.json and eval_per_frame.png")
    return 0


def cmd_predict(args) -> int:

    from .train import write_predictions

    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)),
                                   "predictions")
    _writable_dir(out, "the predictions")
    model, _, dataset, input_len, pred_len = _load_run(args.checkpoint, args.data, args.device,
                                                       args.input_len, args.pred_len)
    device = next(model.parameters()).device
    count = min(args.num, len(dataset))
    for i in range(count):  # a sampling model's noise: reset once, then new for each sequence
        png, gif = write_predictions(model, dataset[i], input_len, pred_len, device, out,
                                     name=f"sequence_{i:03d}", reset=i == 0)
        print(f"wrote {png} and {gif}")
    if count < args.num:
        print(f"fastcells predict: wrote {count} of the {args.num} sequences asked for: the "
              f"dataset holds {len(dataset)}", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    import platform

    import torch

    from . import __version__, _ext, backends

    print(f"fastcells {__version__}, torch {torch.__version__}, python "
          f"{platform.python_version()}, {platform.machine()}, {torch.get_num_threads()} threads")
    print(f"backends available: {', '.join(backends.available_backends())}")
    if not _ext.cpp_available():
        print(f"  cpp: not built ({_ext.BUILD_HINT})")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            print(f"cuda:{i}: {torch.cuda.get_device_name(i)}")
    else:
        print("cuda: not available")
    for name in ("triton", "fvcore", "matplotlib", "tqdm", "h5py", "tensorboard"):
        try:
            module = __import__(name)
            print(f"{name}: {getattr(module, '__version__', 'installed')}")
        except ImportError:
            print(f"{name}: not installed")
    return 0


def cmd_bench(args) -> int:
    from . import bench

    return bench.main(args.rest)


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, steps=args.steps, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fastcells", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fastcells {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model of the zoo")
    _add_config_options(p)
    p.add_argument("--out", default="runs/fastcells", help="run directory (default %(default)s)")
    p.add_argument("--resume", nargs="?", const=True, default=False,
                   help="continue <out>/last.pt, or the checkpoint given")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--break-lock", action="store_true",
                   help="take over --out even though its .lock names a live run or another "
                        "host (only when you know that run is gone, e.g. a requeued job)")
    p.set_defaults(func=cmd_train)

    for name, func, what in (("eval", cmd_eval, "evaluate a checkpoint"),
                             ("predict", cmd_predict, "write PNG strips and GIFs")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--checkpoint", required=True, help="a training checkpoint (last.pt, "
                                                           "best.pt)")
        p.add_argument("--data", help="a dataset spec (default: the run's validation split)")
        p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
        p.add_argument("--out", help="output directory (default: next to the checkpoint)")
        p.add_argument("--input-len", type=positive_int, default=None,
                       help="given frames per sequence, >= 1 (default: the run's); recurrent "
                            "models read any number, VDT conditions each clip on at most its "
                            "input_len last ones, STLight needs its own")
        p.add_argument("--pred-len", type=positive_int, default=None,
                       help="frames to predict, >= 1 (default: the run's); any number: "
                            "recurrent models roll out, VDT samples clip after clip, STLight "
                            "runs again on its latest frames")
        if name == "eval":
            p.add_argument("--batch-size", type=positive_int, default=8,
                           help="sequences per batch, >= 1 (default %(default)s)")
            p.add_argument("--batches", type=positive_int, default=None,
                           help="evaluate at most this many batches, >= 1 (default: all)")
            p.add_argument("--thresholds", type=_thresholds, default=(),
                           help="CSI/HSS/POD/FAR thresholds, numbers separated by commas, "
                                "e.g. 0.3,0.5")
            p.add_argument("--lpips-weights", help="LPIPS weights file (never downloaded)")
            p.add_argument("--lpips-net", default="alex", choices=("alex", "vgg"),
                           help="LPIPS backbone of the weights file (default %(default)s)")
            p.add_argument("--fvd-detector",
                           help="FVD: a video detector TorchScript file, StyleGAN-V's I3D "
                                "i3d_torchscript.pt (never downloaded); frames resized to "
                                "224, values in [-1, 1], its features before the softmax")
            p.add_argument("--fvd-videos", default="full", choices=("full", "pred"),
                           help="FVD compares whole clips, given + predicted frames vs the "
                                "true clip (full, default), or predicted frames only (pred)")
        else:
            p.add_argument("--num", type=positive_int, default=4,
                           help="sequences to draw, >= 1 (default %(default)s; fewer if the "
                                "data holds fewer)")
        p.set_defaults(func=func)

    p = sub.add_parser("bench", help="benchmarks (options of python -m fastcells.bench)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("info", help="backends, versions, devices")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="train ms_lstm on synthetic data, compare backends")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    from .train import TrainingDiverged

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own options, passed through untouched
        argv = ["bench", "--", *argv[1:]] if len(argv) > 1 and argv[1] != "--" else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `fastcells`
        parser.print_help()
        return 0
    if args.command == "bench" and args.rest[:1] == ["--"]:
        args.rest = args.rest[1:]
    from .train.rundir import RunDirectoryLocked

    try:
        return args.func(args)
    except TrainingDiverged as e:
        print(f"fastcells {args.command}: stopped: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # outside the training loop (which says where it stopped)
        print(f"fastcells {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError,
            ImportError, RunDirectoryLocked) as e:
        print(f"fastcells {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, an I/O error: what failed, not a traceback
        print(f"fastcells {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
