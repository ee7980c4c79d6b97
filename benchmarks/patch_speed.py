"""Training speed and memory of models built on the public cells, before and after
``fastcells.patch`` (default and ``memory_efficient=True``).

    python benchmarks/patch_speed.py [--quick | --only TEXT] [--small] [--repeats N]
                                     [--json F] [--markdown F]

Each family's model (the re-creations in ``tests/public``, two recurrent layers of 32
channels at 64x64, batch 4, 6 frames, unless a row says otherwise; ``--small``: 16 channels
at 32x32, batch 2) runs forward + backward of an MSE loss on frames that need no gradient,
as in training. The unpatched model and two patched copies (same weights; fused, and
memory-efficient) run round-robin, so the ratios are measured side by side. "saved MB" is
what autograd keeps for the backward of one training step (parameters excluded).

A family is one line of :data:`FAMILIES`: a model factory, its forward call, the frame
channels.
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
from fastcells.utils import saved_tensor_bytes
from tests.public import (msrnn, msrnn_convlstm, msrnn_mim, msrnn_predrnn, msrnn_predrnnpp,
                          ndrplz, nvlabs, openstl_mim, thuml)
from tests.public import openstl as openstl_pp  # PredRNN++
from tests.public import openstl_convlstm as openstl  # ConvLSTM, PredRNN-v2, PhyDNet

B, T, C, HW = 4, 6, 32, 64
SMALL = dict(B=2, T=6, C=16, HW=32)


def _mask(frames, input_length):
    # scheduled sampling half-way: the mask of true frames for the predicted steps
    b, t, *rest = frames.shape
    return torch.bernoulli(torch.full((b, t - input_length - 1, *rest), 0.5),
                           generator=torch.Generator().manual_seed(0))


def _openstl(cell, filter_size):
    """OpenSTL's model loop; frames (B, T, H, W, C) as OpenSTL takes them."""
    def forward(m, x):
        x = x.permute(0, 1, 3, 4, 2)
        return m(x, _mask(x, T // 2))

    return (lambda: openstl.RecurrentModel(cell, 2, [C, C], 1, HW, HW, filter_size=filter_size,
                                           pre_seq_length=T // 2), forward)


def _openstl_model(model_class, make_configs, filter_size):
    """OpenSTL's PredRNN++ / MIM models (two layers, patch 1); frames (B, T, H, W, C)."""
    def forward(m, x):
        x = x.permute(0, 1, 3, 4, 2)
        return m(x, _mask(x, T // 2))

    return (lambda: model_class(2, [C, C], make_configs(filter_size)), forward)


def _pp_configs(filter_size):
    return openstl_pp.configs((T, 1, HW, HW), 1, filter_size, T // 2, T - T // 2)


def _mim_configs(filter_size):
    return openstl_mim.configs(in_shape=(T, 1, HW, HW), patch_size=1, filter_size=filter_size,
                               pre_seq_length=T // 2, aft_seq_length=T - T // 2)


def _phydnet(m, x):
    return torch.stack([m(x[:, t], first_timestep=t == 0)[1][-1] for t in range(T)], dim=1)


def _msrnn_v2(m, x):
    out, decouple = m(x)
    return out, decouple.mean()


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
    "OpenSTL ConvLSTM (k=5)": (*_openstl(openstl.ConvLSTMCell, 5), 1),
    "OpenSTL PredRNN-v2 (k=5, decoupling loss)": (*_openstl(openstl.SpatioTemporalLSTMCellv2,
                                                            5), 1),
    "OpenSTL PhyDNet ConvLSTM (k=3)": (
        lambda: openstl.PhyD_ConvLSTM((HW, HW), 1, [C, C], 2, (3, 3)), _phydnet, 1),
    "OpenSTL PredRNN++ (causal LSTM + GHU, k=5)": (
        *_openstl_model(openstl_pp.PredRNNpp_Model, _pp_configs, 5), 1),
    "OpenSTL MIM (ST-LSTM + MIMBlock + MIMN, k=5)": (
        *_openstl_model(openstl_mim.MIM_Model, _mim_configs, 5), 1),
    "MS-RNN MIM (MIM_Cell x2, k=3)": (lambda: msrnn_mim.MIM(1, C, (B, HW, HW)),
                                      lambda m, x: m(x), 1),
    "MS-RNN ConvLSTM (k=3)": (lambda: msrnn_convlstm.ConvLSTM(1, C, (B, HW, HW)),
                              lambda m, x: m(x), 1),
    "MS-RNN PredRNN (k=3)": (lambda: msrnn_predrnn.PredRNN(1, C, (B, HW, HW)),
                             lambda m, x: m(x), 1),
    "MS-RNN PredRNN-v2 (k=3, decoupling loss)": (
        lambda: msrnn_predrnn.PredRNN(1, C, (B, HW, HW), v2=True), _msrnn_v2, 1),
    "MS-RNN PredRNN++ (k=3, GHU in layer 1)": (
        lambda: msrnn_predrnnpp.PredRNN_Plus2(1, C, (B, HW, HW), 2), lambda m, x: m(x), 1),
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


VARIANTS = ("original", "patched", "memory_efficient")


def measure(name: str, repeats: int, backend: str = "cpp") -> dict:
    factory, forward, channels = FAMILIES[name]
    torch.manual_seed(0)
    models = {"original": factory()}
    models["patched"] = copy.deepcopy(models["original"])
    models["memory_efficient"] = copy.deepcopy(models["original"])
    replaced = fastcells.patch(models["patched"], backend=backend)
    if fastcells.patch(models["memory_efficient"], backend=backend,
                       memory_efficient=True) != replaced:
        raise RuntimeError(f"{name}: memory_efficient patched other cells")
    frames = torch.rand(B, T, channels, HW, HW)
    steps = {v: train_step(m, forward, frames) for v, m in models.items()}
    saved = {v: saved_tensor_bytes(lambda v=v: _loss(models[v], forward, frames),
                                   exclude=models[v].parameters()) for v in VARIANTS}
    times = time_side_by_side(steps, repeats)
    base = times["original"]
    return {"family": name, "replaced": replaced, "seconds": times, "saved_bytes": saved,
            "speedup_median": base["median"] / times["patched"]["median"],
            "speedup_min": base["min"] / times["patched"]["min"],
            "memory_efficient_speedup_median": (base["median"]
                                                / times["memory_efficient"]["median"])}


def _loss(model, forward, frames):
    out = forward(model, frames)
    extra = 0.0
    if isinstance(out, tuple):
        out, extra = out
    return torch.nn.functional.mse_loss(out, torch.zeros_like(out)) + extra


def format_table(rows: list[dict], info: dict) -> str:
    lines = [(f"# fastcells.patch: training step before/after, {info['processor']}, "
              f"{info['threads']} threads, torch {info['torch']}, {info['date']}"), "",
             (f"B={B}, T={T}, {C} channels, {HW}x{HW}, fwd+bwd of an MSE loss; "
              "medians of round-robin repeats (ratio of minima in parentheses); saved MB: "
              "what autograd keeps for backward."), "",
             "| model (cells replaced) | original ms | patched ms | speedup "
             "| memory_efficient ms (speedup) | saved MB: original / patched / mem.-eff. |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        t, mb = r["seconds"], {k: v / 2 ** 20 for k, v in r["saved_bytes"].items()}
        lines.append(f"| {r['family']} ({len(r['replaced'])}) | "
                     f"{t['original']['median'] * 1e3:.1f} | {t['patched']['median'] * 1e3:.1f} | "
                     f"{r['speedup_median']:.2f}x ({r['speedup_min']:.2f}x) | "
                     f"{t['memory_efficient']['median'] * 1e3:.1f} "
                     f"({r['memory_efficient_speedup_median']:.2f}x) | "
                     f"{mb['original']:.1f} / {mb['patched']:.1f} / "
                     f"{mb['memory_efficient']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the issue's PredRNN row only")
    parser.add_argument("--only", help="the families whose name contains this text")
    parser.add_argument("--small", action="store_true",
                        help=f"smaller models and frames ({SMALL})")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    if args.small:
        globals().update(SMALL)  # the factories and forwards read these when called
    names = [PRIMARY] if args.quick else [n for n in FAMILIES
                                          if args.only is None or args.only in n]
    if not names:
        parser.error(f"--only {args.only!r} matches no family of {list(FAMILIES)}")
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
