"""Several steps' weight gradients in one Winograd call (``fastcells.set_weight_grad_steps``),
side by side with one call per step: the kernel alone, and training iterations.

    python benchmarks/weight_grad_steps.py [--steps N] [--repeats R] [--sections kernel train]
                                           [--openstl] [--quick] [--json F] [--markdown F]

kernel: ``T`` steps' (x, dz) pairs of one convolution, ``winograd8``; their summed weight
gradient as T calls of ``conv_weight_grad_winograd`` against one call of
``conv_weight_grad_winograd_sum`` (interleaved medians).
train: one training iteration (forward, backward) of zoo models on the ``cpp`` backend with
``auto`` convolutions, ``set_weight_grad_steps(1)`` against ``(N)`` on the same model in one
process, the order rotated every round; "kept MB" is the most memory the kept pairs held at
once (``weight_grad_steps.stats["peak_kept_bytes"]``), "saved MB" what autograd keeps for
backward. ``--openstl`` adds PredRNN at OpenSTL's size (128 channels, patch 4, 4 layers,
B=16; ~15 s per iteration here).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastcells  # noqa: E402
from fastcells import _ext, models  # noqa: E402
from fastcells.bench import machine_info, time_side_by_side  # noqa: E402
from fastcells.bench.kernels import _machine_line, load_warning  # noqa: E402
from fastcells.ops import weight_grad_steps  # noqa: E402
from fastcells.utils import saved_tensor_bytes  # noqa: E402

T = 10
# (B, Cin, Cout, k, H = W): the hidden convolutions of the training rows below
KERNEL_SHAPES = [(4, 64, 128, 5, 64), (4, 64, 128, 3, 64), (4, 65, 256, 5, 64),
                 (4, 128, 256, 5, 64), (4, 33, 128, 3, 64), (16, 256, 512, 5, 16)]
# name, model, overrides, batch
TRAIN_ROWS = [("ConvLSTM 64 ch k5", "convlstm",
               dict(hidden_size=64, kernel_size=5, num_layers=2), 4),
              ("MS-LSTM mmnist", "ms_lstm", {}, 4),
              ("PredRNN 64 ch k5", "predrnn", dict(hidden_size=64, kernel_size=5, num_layers=2),
               4)]
OPENSTL_ROW = ("PredRNN OpenSTL-like", "predrnn",
               dict(hidden_size=128, patch_size=4, num_layers=4, kernel_size=5), 16)
QUICK_KERNEL = [(2, 8, 16, 5, 16)]
QUICK_TRAIN = [("ConvLSTM 8 ch k5", "convlstm", dict(hidden_size=8, kernel_size=5,
                                                     num_layers=1), 2)]


def kernel_rows(shapes, repeats):
    ext = _ext.cpp_extension()
    rows = []
    for b, cin, cout, k, hw in shapes:
        xs = [torch.randn(b, cin, hw, hw) for _ in range(T)]
        dzs = [torch.randn(b, cout, hw, hw) for _ in range(T)]
        pad, points = k // 2, 8

        def per_step():
            return sum(ext.conv_weight_grad_winograd(x, g, k, pad, 0, points)
                       for x, g in zip(xs, dzs))

        def one_call():
            return ext.conv_weight_grad_winograd_sum(xs, dzs, k, pad, 0, points)

        diff = (per_step() - one_call()).norm() / per_step().norm()
        ms = time_side_by_side({"per_step": per_step, "one_call": one_call}, repeats=repeats)
        rows.append({"shape": [b, cin, cout, k, hw], "steps": T,
                     "per_step_ms": ms["per_step"]["median"] * 1e3,
                     "one_call_ms": ms["one_call"]["median"] * 1e3,
                     "speedup": ms["per_step"]["median"] / ms["one_call"]["median"],
                     "rel_diff": float(diff)})
        print(f"kernel {rows[-1]}", flush=True)
    return rows


def _iteration(model, frames, steps):
    weight_grad_steps.set_weight_grad_steps(steps)
    model.zero_grad(set_to_none=True)
    model.training_loss(frames).backward()


def train_rows(rows_spec, steps, repeats):
    out = []
    for name, model_name, overrides, batch in rows_spec:
        torch.manual_seed(0)
        model = models.create(model_name, preset="mmnist", backend="cpp", input_len=5,
                              pred_len=5, **overrides).train()
        frames = torch.rand(batch, 10, 1, 64, 64)
        variants = [1, steps]
        for n in variants:  # warm-up: the first iteration times every convolution's algorithm
            _iteration(model, frames, n)
        samples = {n: [] for n in variants}
        for r in range(repeats):
            for n in variants[r % 2:] + variants[:r % 2]:  # neither always first
                t0 = time.perf_counter()
                _iteration(model, frames, n)
                samples[n].append(time.perf_counter() - t0)
        weight_grad_steps.stats.update(peak_kept_bytes=0, pairs=0)
        _iteration(model, frames, steps)
        kept, pairs = (weight_grad_steps.stats[k] for k in ("peak_kept_bytes", "pairs"))
        saved = saved_tensor_bytes(lambda: model.training_loss(frames),
                                   exclude=list(model.parameters()))
        med = {n: statistics.median(v) for n, v in samples.items()}
        out.append({"name": name, "model": model_name, "overrides": overrides, "batch": batch,
                    "steps": steps, "per_step_s": med[1], "grouped_s": med[steps],
                    "speedup": med[1] / med[steps], "kept_mb": kept / 2**20, "grouped_pairs": pairs,
                    "saved_mb": saved / 2**20, "repeats": repeats})
        print(f"train {out[-1]}", flush=True)
    return out


def markdown(result) -> str:
    lines = ["# Sequence weight gradients (cpu)", "", _machine_line(result["machine"]), "",
             *load_warning(result["machine"])]
    if result["kernel"]:
        lines += [f"Summed weight gradient of {T} steps, `winograd8`: {T} calls against one "
                  "call over the list of pairs (ms, interleaved medians).", "",
                  "| B, Cin -> Cout, k, H=W | per step | one call | speedup | rel. diff |",
                  "|---|---|---|---|---|"]
        for r in result["kernel"]:
            b, cin, cout, k, hw = r["shape"]
            lines.append(f"| {b}, {cin} -> {cout}, {k}, {hw} | {r['per_step_ms']:.1f} | "
                         f"{r['one_call_ms']:.1f} | {r['speedup']:.2f}x | "
                         f"{r['rel_diff']:.1e} |")
        lines.append("")
    if result["train"]:
        steps = result["train"][0]["steps"]
        lines += [f"One training iteration (5 -> 5 frames of 64x64, `cpp`, convolutions "
                  f"`{result['conv']}`): "
                  f"`set_weight_grad_steps(1)` against `({steps})`, medians of rounds in "
                  "rotated order. Pairs: the steps' weight gradients that were grouped in one "
                  "iteration; kept MB: the most the kept pairs held at once; saved MB: what "
                  "autograd keeps for backward.", "",
                  "| model | B | per step (s) | grouped (s) | speedup | pairs | kept MB | "
                  "saved MB |", "|---|---|---|---|---|---|---|---|"]
        for r in result["train"]:
            lines.append(f"| {r['name']} | {r['batch']} | {r['per_step_s']:.3f} | "
                         f"{r['grouped_s']:.3f} | {r['speedup']:.3f}x | "
                         f"{r['grouped_pairs']} | {r['kept_mb']:.0f} | "
                         f"{r['saved_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sections", nargs="+", default=["kernel", "train"],
                        choices=["kernel", "train"])
    parser.add_argument("--openstl", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--conv", default=None,
                        help="fastcells.set_conv_algorithm setting (default 'auto'; --quick: "
                             "'weight=winograd8', so that its tiny convolutions group)")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    if not _ext.cpp_available():
        raise SystemExit("the C++ extension is not built: " + _ext.BUILD_HINT)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    saved_setting = fastcells.get_conv_algorithm()
    saved_steps = fastcells.get_weight_grad_steps()
    conv = args.conv or ("weight=winograd8" if args.quick else "auto")
    fastcells.set_conv_algorithm(conv)
    try:
        kernel = (kernel_rows(QUICK_KERNEL if args.quick else KERNEL_SHAPES, args.repeats)
                  if "kernel" in args.sections else [])
        spec = QUICK_TRAIN if args.quick else TRAIN_ROWS + ([OPENSTL_ROW] if args.openstl
                                                            else [])
        train = (train_rows(spec, args.steps, args.repeats)
                 if "train" in args.sections else [])
    finally:
        fastcells.set_conv_algorithm(**saved_setting)
        fastcells.set_weight_grad_steps(saved_steps)
    info["load_average_end"] = machine_info()["load_average"]
    result = {"machine": info, "conv": conv, "kernel": kernel, "train": train}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    text = markdown(result)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
