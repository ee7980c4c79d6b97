"""Training speed of models built on the public cells, before and after ``fastcells.patch``.

    python benchmarks/patch_speed.py [--quick] [--repeats N] [--json F] [--markdown F]

Each family's model (the re-creations in ``tests/public``, two recurrent layers of 32
channels at 64x64, batch 4, 6 frames, unless a row says otherwise) runs forward + backward
of an MSE loss on frames that need no gradient, as in training. The unpatched model and a
patched copy (same weights) run round-robin, so the ratio is measured side by side.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastcells
from fastcells.bench import machine_info, time_side_by_side
from tests.public import msrnn, ndrplz, nvlabs, thuml

B, T, C, HW = 4, 6, 32, 64


def _mask(frames, input_length):
    # scheduled sampling half-way: the mask of true frames for the predicted steps
    b, t, *rest = frames.shape
    return torch.bernoulli(torch.full((b, t - input_length - 1, *rest), 0.5),
                           generator=torch.Generator().manual_seed(0))


def _predrnn(cls, filter_size):
    return (lambda: cls(2, [C, C], 1, HW, filter_size=filter_size, input_length=T // 2),
            lambda m, x: m(x, _mask(x, T // 2)))


# name -> (model factory, forward(model, frames) -> output or (output, extra loss), frame C)
FAMILIES: dict[str, tuple[Callable, Callable, int]] = {
    "thuml PredRNN (ST-LSTM, k=3)": (*_predrnn(thuml.RNN, 3), 1),
    "thuml PredRNN (ST-LSTM, k=5)": (*_predrnn(thuml.RNN, 5), 1),
    "thuml PredRNN-v2 (k=3, decoupling loss)": (*_predrnn(thuml.RNNv2, 3), 1),
    "ndrplz ConvLSTM (k=3)": (lambda: ndrplz.ConvLSTM(1, C, (3, 3), 2, batch_first=True),
                              lambda m, x: m(x)[0][0], 1),
    "NVlabs ConvLSTM (k=5)": (lambda: nvlabs.ConvLSTMNet(nvlabs.ConvLSTMCell, 1, C, 2),
                              lambda m, x: m(x), 1),
    "NVlabs Conv-TT-LSTM (k=5, order 3, steps 3, rank 8)": (
        lambda: nvlabs.ConvLSTMNet(nvlabs.ConvTTLSTMCell, 1, C, 2), lambda m, x: m(x), 1),
    "MS-RNN MK-LSTM stack (k=3,5)": (lambda: msrnn.MKStack(1, C, (B, HW, HW)),
                                     lambda m, x: m(x), 1),
    "MS-RNN MS-LSTM (6-layer pyramid)": (lambda: msrnn.MS_LSTM(1, C, (B, HW, HW)),
                                         lambda m, x: m(x), 1),
}
PRIMARY = "thuml PredRNN (ST-LSTM, k=3)"  # the target row


def train_step(model, forward, frames) -> Callable[[], None]:
    targets = {}

    def run():
        out = forward(model, frames)
        extra = 0.0
        if isinstance(out, tuple):  # PredRNN-v2: (frames, decoupling loss)
            out, extra = out
        target = targets.setdefault("y", torch.rand_like(out.detach()))
        loss = torch.nn.functional.mse_loss(out, target) + extra
        model.zero_grad(set_to_none=True)
        loss.backward()

    return run


def measure(name: str, repeats: int, backend: str = "cpp") -> dict:
    factory, forward, channels = FAMILIES[name]
    torch.manual_seed(0)
    original = factory()
    patched = copy.deepcopy(original)
    replaced = fastcells.patch(patched, backend=backend)
    frames = torch.rand(B, T, channels, HW, HW)
    times = time_side_by_side({"original": train_step(original, forward, frames),
                               "patched": train_step(patched, forward, frames)}, repeats)
    return {"family": name, "replaced": replaced, "seconds": times,
            "speedup_median": times["original"]["median"] / times["patched"]["median"],
            "speedup_min": times["original"]["min"] / times["patched"]["min"]}


def format_table(rows: list[dict], info: dict) -> str:
    lines = [(f"# fastcells.patch: training step before/after, {info['processor']}, "
              f"{info['threads']} threads, torch {info['torch']}, {info['date']}"), "",
             (f"B={B}, T={T}, {C} channels, {HW}x{HW}, fwd+bwd of an MSE loss; "
              "medians of round-robin repeats (ratio of minima in parentheses)."), "",
             "| model (cells replaced) | original ms | patched ms | speedup |",
             "|---|---|---|---|"]
    for r in rows:
        t = r["seconds"]
        lines.append(f"| {r['family']} ({len(r['replaced'])}) | "
                     f"{t['original']['median'] * 1e3:.1f} | {t['patched']['median'] * 1e3:.1f} | "
                     f"{r['speedup_median']:.2f}x ({r['speedup_min']:.2f}x) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the issue's PredRNN row only")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    names = [PRIMARY] if args.quick else list(FAMILIES)
    rows = []
    for name in names:
        print(f"measuring {name} ...", flush=True)
        rows.append(measure(name, args.repeats))
    info = machine_info()
    table = format_table(rows, info)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
