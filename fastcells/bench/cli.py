"""The benchmark command line: fastcells bench = python -m fastcells.bench.

    fastcells bench --quick                          # everything, tiny settings, ~1 minute
    fastcells bench all --out benchmarks/results     # everything at the papers' settings
    fastcells bench kernels --sizes small --cells convlstm stlstm
    fastcells bench train --models convlstm ms_lstm --batch 16 --device cuda
    fastcells bench readme [--check]                 # README's results block from the files

Without a command, ``all`` runs. ``--out DIR`` writes ``DIR/<device>_kernels.{md,json}``
and ``DIR/<device>_train.{md,json}``; the Markdown is also printed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from .._argtypes import ensure_writable_dir, positive_int
from . import kernels, readme, training, workloads
from .timing import overloaded

COMMANDS = ("all", "kernels", "train", "readme")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _key_value(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common")
    g.add_argument("--quick", action="store_true",
                   help="tiny sizes, few repeats, no torch.compile baseline (unless "
                        "--compile): about a minute on a 2-core CPU")
    g.add_argument("--device", default=None,
                   help="cpu or cuda[:N] (default: cuda when available, else cpu)")
    g.add_argument("--threads", type=positive_int,
                   help="torch CPU threads (default: torch's, i.e. OMP_NUM_THREADS or all "
                        "cores)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="measure the torch.compile(reference) baseline (default: yes, "
                        "except with --quick)")
    g.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the compiled baseline (default: inductor)")
    g.add_argument("--out", metavar="DIR",
                   help="write <device>_<kernels|train>.md and .json into DIR")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _kernel_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kernels")
    g.add_argument("--sizes", nargs="+", choices=list(workloads.SIZES),
                   help="named sizes (default: all: " + "; ".join(
                       f"{k} {v}" for k, v in workloads.SIZES.items()) + ")")
    g.add_argument("--size", type=positive_int, nargs=4, metavar=("B", "C", "H", "W"),
                   help="a custom size instead of --sizes")
    g.add_argument("--cells", nargs="+", choices=list(workloads.CELLS),
                   default=list(workloads.CELLS))
    g.add_argument("--kinds", nargs="+", choices=kernels.KINDS, default=list(kernels.KINDS),
                   help="gates: the pointwise gate math alone; step: a whole cell step")
    g.add_argument("--modes", nargs="+", choices=workloads.MODES, default=list(workloads.MODES))
    g.add_argument("--dtypes", nargs="+", choices=list(workloads.DTYPES),
                   help="default: fp32 on CPU, fp32 and bf16 on CUDA")
    g.add_argument("--variants", nargs="+",
                   help="only these: reference, compiled, a backend (cpp, triton, cuda) or "
                        "<backend>_memeff (default: all available)")
    g.add_argument("--repeats", type=positive_int,
                   help="interleaved repeats per row (default: as many as fit in --budget)")
    g.add_argument("--budget", type=_positive_float, default=None,
                   help="seconds of timing per row when --repeats is not given (default 10, "
                        "0.5 with --quick)")
    g.add_argument("--no-stack-memory", action="store_true",
                   help="skip the 2-layer x 6-frame saved-bytes measurement")


def _train_options(p: argparse.ArgumentParser) -> None:
    from .. import models

    g = p.add_argument_group("train")
    g.add_argument("--models", nargs="+", default=list(training.DEFAULT_MODELS),
                   help=f"zoo models (default: {' '.join(training.DEFAULT_MODELS)}; "
                        f"available: {' '.join(models.list_models())})")
    g.add_argument("--preset", default="mmnist", help="zoo preset (default mmnist)")
    g.add_argument("--batch", type=positive_int,
                   help="batch size (default: 16 on CUDA, 4 on CPU, 1 with --quick)")
    g.add_argument("--input-len", type=positive_int, help="T_in (default: the preset's)")
    g.add_argument("--pred-len", type=positive_int,
                   help="frames to predict (default: the preset's)")
    g.add_argument("--train-variants", nargs="+", choices=training.VARIANTS,
                   default=list(training.VARIANTS), help="default: all")
    g.add_argument("--compile-scope", choices=("model", "cells"), default="model",
                   help="model: torch.compile(model.training_loss), one graph of the whole "
                        "rollout (slow to compile); cells: compile each cell's step")
    g.add_argument("--train-repeats", type=positive_int,
                   help="interleaved repeats (default: 3 on CPU, 10 on CUDA)")
    g.add_argument("--model-arg", action="append", type=_key_value, default=[],
                   metavar="KEY=VALUE", help="model constructor override, e.g. hidden_size=8 "
                                             "(repeatable; the table then says so)")
    g.add_argument("--no-flops", action="store_true", help="skip fvcore's FLOP count")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastcells bench", description=__doc__,
        epilog="Without a command: all. Each command has its own --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="{all,kernels,train,readme}")
    a = sub.add_parser("all", help="kernel tables and training tables")
    _common(a)
    k = sub.add_parser("kernels", help="gate kernels and cell steps, per cell, size, variant")
    _common(k)
    _kernel_options(k)
    _files(k)
    t = sub.add_parser("train", help="training-cost tables (MS-LSTM format) of zoo presets")
    _common(t)
    _train_options(t)
    _files(t)
    r = sub.add_parser("readme", help="rewrite README's results block and NOTES' floor table "
                                      "from the result files")
    r.add_argument("--check", action="store_true",
                   help="only check; exit 1 when a generated block is out of date")
    r.add_argument("--results", default=str(readme.RESULTS_DIR), help="result files' folder")
    r.add_argument("--readme", default=str(readme.README), help="README to update")
    r.add_argument("--notes", default=str(readme.NOTES),
                   help="benchmark notes whose floor table to update")
    p.commands = {"all": a, "kernels": k, "train": t, "readme": r}
    return p


def _files(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", help="write the result as JSON to this path")
    p.add_argument("--markdown", help="write the report as Markdown to this path")


def _device(args, parser) -> torch.device:
    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        parser.error(f"--device: {e}")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda[:N], got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (torch "
                     f"{torch.__version__})")
    return device


def kernel_config(args, parser, device) -> kernels.KernelConfig:
    if args.size and args.sizes:
        parser.error("give --sizes or --size, not both")
    if args.size:
        sizes = {"custom": workloads.Size(*args.size)}
    elif args.sizes:
        sizes = {k: workloads.SIZES[k] for k in args.sizes}
    else:
        sizes = {"quick": workloads.QUICK_SIZE} if args.quick else dict(workloads.SIZES)
    dtypes = tuple(workloads.DTYPES[d] for d in (args.dtypes or (
        ["fp32", "bf16"] if device.type == "cuda" else ["fp32"])))
    if args.variants:
        for v in args.variants:
            try:
                workloads.parse_variant(v)
            except ValueError as e:
                parser.error(f"--variants: {e}")
    return kernels.KernelConfig(
        device=device, dtypes=dtypes, sizes=sizes, cells=tuple(args.cells),
        kinds=tuple(args.kinds), modes=tuple(args.modes),
        variants=tuple(args.variants) if args.variants else None,
        compile=_compile(args), compile_backend=args.compile_backend, repeats=args.repeats,
        budget_s=args.budget or (0.5 if args.quick else 10.0), warmup=1 if args.quick else 2,
        stack_memory=not args.no_stack_memory, quick=args.quick)


def train_config(args, parser, device) -> training.TrainBenchConfig:
    from .. import models

    unknown = [m for m in args.models if m not in models.list_models()]
    if unknown:
        parser.error(f"--models: unknown {unknown}; available: {models.list_models()}")
    for m in args.models:
        if args.preset not in models.list_presets(m):
            parser.error(f"--preset: model {m!r} has presets {models.list_presets(m)}, got "
                         f"{args.preset!r}")
    variants = tuple(args.train_variants)
    if not _compile(args):
        variants = tuple(v for v in variants if v != "compiled")
    if not variants:
        parser.error("--train-variants: nothing left to measure")
    return training.TrainBenchConfig(
        device=device, models=tuple(args.models), preset=args.preset,
        batch=args.batch or (1 if args.quick else None),
        input_len=args.input_len or (2 if args.quick else None),
        pred_len=args.pred_len or (2 if args.quick else None), variants=variants,
        compile_backend=args.compile_backend, compile_scope=args.compile_scope,
        repeats=args.train_repeats, overrides=dict(args.model_arg),
        flops=not args.no_flops, quick=args.quick)


def _check_outputs(args, parser) -> None:
    """--out, --json and --markdown must be writable places."""
    places = [("--out", args.out)] if args.out else []
    for flag in ("json", "markdown"):
        path = getattr(args, flag, None)
        if path:
            places.append((f"--{flag}", os.path.dirname(os.path.abspath(path))))
    for flag, folder in places:
        try:
            ensure_writable_dir(folder)
        except OSError as e:
            parser.error(f"{flag}: cannot write to {folder!r} ({e.strerror or e}); pick a "
                         f"writable place")


def _compile(args) -> bool:
    return (not args.quick) if args.compile is None else args.compile


def _write(result: dict, text: str, args, kind: str) -> None:
    paths = []
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        base = os.path.join(args.out, f"{result['device']}_{kind}")
        paths += [(base + ".json", "json"), (base + ".md", "md")]
    if getattr(args, "json", None):
        paths.append((args.json, "json"))
    if getattr(args, "markdown", None):
        paths.append((args.markdown, "md"))
    for path, fmt in paths:
        with open(path, "w") as f:
            if fmt == "json":
                json.dump(result, f, indent=1)
                f.write("\n")
            else:
                f.write(text + "\n")
    print(text)
    for path, _ in paths:
        print(f"wrote {path}", file=sys.stderr)


def main(argv=None) -> int:
    """Runs the command of ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] in (["-h"], ["--help"]):
        # the commands, then the options of the default command (`all`): --quick, --out, ...
        print(parser.format_help())
        print("Options without a command (those of `all`):\n")
        print(parser.commands["all"].format_help().split("\n\n", 1)[1])
        return 0
    if not argv or argv[0] not in COMMANDS:
        argv = ["all", *argv]
    args = parser.parse_args(argv)
    sub = parser.commands[args.command]  # errors name the command's usage
    if args.command == "readme":
        stale = []
        for path, fn in ((args.readme, readme.update), (args.notes, readme.update_notes)):
            try:
                changed = fn(path, args.results, check=args.check)
            except (OSError, ValueError) as e:
                sub.error(str(e))
            stale += [path] if changed else []
            state = ("out of date" if args.check else "rewritten") if changed else "up to date"
            print(f"{path}: generated block {state}")
        return 1 if args.check and stale else 0
    if args.threads:
        torch.set_num_threads(args.threads)
    _check_outputs(args, sub)  # before minutes of measuring, not after
    device = _device(args, sub)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if overloaded(load, os.cpu_count()):
        print(f"fastcells bench: warning: load average {load:.2f} is above the "
              f"{os.cpu_count()} cores; other jobs share this machine, so the ratios measured "
              f"now are not trustworthy (the report says so too)", file=sys.stderr)
    if args.command in ("all", "kernels"):
        if args.command == "all":  # defaults of the kernels command
            args = _with_defaults(args, _kernel_options)
        cfg = kernel_config(args, sub, device)
        result = kernels.run_kernels(cfg, progress=not args.no_progress)
        _write(result, kernels.format_kernels(result), args, "kernels")
    if args.command in ("all", "train"):
        if args.command == "all":
            args = _with_defaults(args, _train_options)
        cfg = train_config(args, sub, device)
        try:
            result = training.run_training(cfg, progress=not args.no_progress)
        except ValueError as e:  # a model the zoo builds but that cannot be benchmarked
            sub.error(str(e))
        _write(result, training.format_training(result), args, "train")
    return 0


def _with_defaults(args, add_options) -> argparse.Namespace:
    """``args`` plus the defaults of a command's options (``all`` runs them as they are)."""
    p = argparse.ArgumentParser(add_help=False)
    add_options(p)
    defaults = vars(p.parse_args([]))
    return argparse.Namespace(**{**defaults, **vars(args)})
