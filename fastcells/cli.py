"""The ``fastcells`` command (also ``python -m fastcells``).

    fastcells demo                      train ms_lstm on synthetic data, report fused vs reference
    fastcells train --model convlstm --preset mmnist --steps 300 --out runs/convlstm
    fastcells train --out runs/convlstm --resume          continue exactly where it stopped
    fastcells eval --checkpoint runs/convlstm/last.pt
    fastcells predict --checkpoint runs/convlstm/last.pt --num 4
    fastcells bench [--quick]           kernel and training-cost benchmarks (python -m fastcells.bench)
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


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


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

    for f in dataclasses.fields(TrainConfig):
        if f.name in ("model_args", "checkpoint_layers", "tensorboard", "out_dir"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = TrainConfig.__dataclass_fields__[f.name].default
        kind = {int: int, float: float}.get(type(default), None)
        if f.name in ("input_len", "pred_len"):
            kind = int
        parser.add_argument(flag, dest=f.name, type=kind or str, default=None,
                            help=f"(default {default!r})")
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
    trainer = Trainer(cfg, resume=args.resume or False, overwrite=args.overwrite)
    result = trainer.fit()
    if result is not None:
        print(json.dumps({k: v for k, v in result.items() if not k.endswith("_curve")}))
    print(f"wrote {cfg.out_dir}/ (last.pt, best.pt, train/val logs, plots)")
    return 0


def _load_run(checkpoint: str, data: str | None, device: str):
    """Model (EMA weights when the run kept them), config and validation set of a run."""
    import torch

    from . import data as fc_data
    from . import models
    from .train import TrainConfig
    from .train.checkpoint import load
    from .train.trainer import run_dataset

    saved = load(checkpoint)
    cfg = TrainConfig.from_dict(saved["config"])
    model = models.create(cfg.model, preset=cfg.preset, backend=cfg.backend, **cfg.model_args)
    model.load_state_dict(saved["ema"] if saved.get("ema") else saved["model"])
    model.to(torch.device(device)).eval()
    input_len = cfg.input_len or model.input_len
    pred_len = cfg.pred_len or model.pred_len
    dataset = run_dataset(cfg, model, input_len + pred_len, data)
    if data is None or data == cfg.data:  # the run's own validation split
        _, dataset = fc_data.split(dataset, cfg.val_fraction, cfg.seed)
    return model, cfg, dataset, input_len, pred_len


def cmd_eval(args) -> int:
    import torch

    from .metrics import LPIPS
    from .train import evaluate_model
    from .train.plots import per_frame_metrics

    model, _, dataset, input_len, pred_len = _load_run(args.checkpoint, args.data, args.device)
    lpips = (LPIPS(args.lpips_weights, net=args.lpips_net).to(args.device)
             if args.lpips_weights else None)
    result = evaluate_model(model, dataset, input_len, pred_len, args.batch_size,
                            torch.device(args.device), args.batches, progress=True,
                            thresholds=args.thresholds, lpips=lpips)
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "eval.json"), "w") as f:
        json.dump(result, f, indent=1)
    per_frame_metrics({k: result[f"{k}_curve"] for k in ("mse_per_frame", "ssim", "psnr")},
                      os.path.join(out, "eval_per_frame.png"))
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_curve")}))
    print(f"wrote {out}/eval.json and eval_per_frame.png")
    return 0


def cmd_predict(args) -> int:
    import torch

    from .train import write_predictions

    model, _, dataset, input_len, pred_len = _load_run(args.checkpoint, args.data, args.device)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)),
                                   "predictions")
    os.makedirs(out, exist_ok=True)
    for i in range(min(args.num, len(dataset))):
        png, gif = write_predictions(model, dataset[i], input_len, pred_len,
                                     torch.device(args.device), out, name=f"sequence_{i:03d}")
        print(f"wrote {png} and {gif}")
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
    parser = argparse.ArgumentParser(prog="fastcells", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model of the zoo")
    _add_config_options(p)
    p.add_argument("--out", default="runs/fastcells", help="run directory (default %(default)s)")
    p.add_argument("--resume", nargs="?", const=True, default=False,
                   help="continue <out>/last.pt, or the checkpoint given")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.set_defaults(func=cmd_train)

    for name, func, what in (("eval", cmd_eval, "evaluate a checkpoint"),
                             ("predict", cmd_predict, "write PNG strips and GIFs")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--checkpoint", required=True)
        p.add_argument("--data", help="a dataset spec (default: the run's validation split)")
        p.add_argument("--device", default="cpu")
        p.add_argument("--out", help="output directory (default: next to the checkpoint)")
        if name == "eval":
            p.add_argument("--batch-size", type=int, default=8)
            p.add_argument("--batches", type=int, default=None, help="cap the batches")
            p.add_argument("--thresholds", type=lambda t: [float(v) for v in t.split(",")],
                           default=(), help="CSI/HSS/POD/FAR thresholds, e.g. 0.3,0.5")
            p.add_argument("--lpips-weights", help="LPIPS weights file (never downloaded)")
            p.add_argument("--lpips-net", default="alex", choices=("alex", "vgg"))
        else:
            p.add_argument("--num", type=int, default=4, help="sequences to draw")
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
    args = build_parser().parse_args(argv)
    if args.command == "bench" and args.rest[:1] == ["--"]:
        args.rest = args.rest[1:]
    try:
        return args.func(args)
    except TrainingDiverged as e:
        print(f"fastcells {args.command}: stopped: {e}", file=sys.stderr)
        return 3
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError,
            ImportError) as e:
        print(f"fastcells {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
