"""Training-cost tables in the MS-LSTM paper's format: Params, Memory, FLOPs, Time.

For each model of the zoo (a preset of :mod:`fastcells.models`), one training iteration —
``optimizer.zero_grad``, ``model.training_loss(frames)`` (teacher forcing over
T_in + pred_len frames), ``backward``, Adam step — is timed for each variant:

- ``eager``: the reference backend (plain PyTorch, the baseline);
- ``fused``: ``backend="auto"`` (cpp on CPU, the preferred GPU backend on CUDA);
- ``fused_memeff``: the same with ``memory_efficient=True``;
- ``fused_onednn``: ``fused`` with every convolution on oneDNN (``conv_algorithm("onednn")``,
  the CPU convolution dispatcher off), so that the convolution algorithm setting ``fused``
  runs with (recorded in the config) is compared in the same run;
- ``compiled``: ``torch.compile`` of the reference model's ``training_loss`` (scope
  ``model``) or of each of its cells (scope ``cells``); compile time reported apart.

All variants start from the same weights and run side by side (round-robin repeats).
Memory: on CUDA the allocator's peak during one iteration plus what stays allocated across
iterations (parameters, optimizer state, the batch), i.e. what the iteration needs; on CPU,
where PyTorch has no peak counter, the bytes autograd saves for backward in one iteration
(exact, the part the fused backends change). FLOPs: fvcore at batch 1 over the whole
T_in -> pred_len rollout, the papers' convention (:func:`fastcells.models.count_flops`).
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

import torch

from .. import models
from ..cells.base import CellBase
from ..ops import conv as conv_setting
from ..utils import saved_tensor_bytes
from . import timing
from .targets import check_train_targets

VARIANTS = ("eager", "fused", "fused_memeff", "fused_onednn", "compiled")
DEFAULT_MODELS = ("convlstm", "predrnn", "ms_lstm")
SCHEMA = 2


@dataclass
class TrainBenchConfig:
    """What :func:`run_training` measures (the ``train`` command's options)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    models: tuple = DEFAULT_MODELS
    preset: str = "mmnist"
    batch: int | None = None  # None: 16 on CUDA (the issue), 4 on CPU (MS-LSTM's batch)
    input_len: int | None = None  # None: the preset's
    pred_len: int | None = None
    variants: tuple = VARIANTS
    compile_backend: str = "inductor"
    compile_scope: str = "model"
    repeats: int | None = None  # None: 3 on CPU, 10 on CUDA
    warmup: int = 1
    overrides: dict = field(default_factory=dict)  # model constructor overrides
    flops: bool = True
    lr: float = 3e-4  # MS-LSTM's Adam learning rate
    quick: bool = False

    def resolved_batch(self) -> int:
        return self.batch or (16 if self.device.type == "cuda" else 4)


def build_model(name: str, cfg: TrainBenchConfig, variant: str):
    """Zoo model ``name`` at ``cfg.preset`` for ``variant`` (seed 0), on ``cfg.device``."""
    kw = dict(cfg.overrides)
    for key in ("input_len", "pred_len"):
        if getattr(cfg, key) is not None:
            kw[key] = getattr(cfg, key)
    backend = "reference" if variant in ("eager", "compiled") else "auto"
    if variant == "fused_memeff":
        kw["memory_efficient"] = True
    torch.manual_seed(0)
    try:
        model = models.create(name, preset=cfg.preset, backend=backend, **kw)
    except TypeError as e:  # e.g. memory_efficient for a model without recurrent cells
        raise ValueError(f"models: {name!r} cannot be built as {variant!r}: {e}") from e
    if not any(isinstance(m, CellBase) for m in model.modules()):
        raise ValueError(f"models: {name!r} has no recurrent cells, so nothing to fuse; pick "
                         "models built on the cells")
    return model.to(cfg.device).train()


def compiled_loss(model, cfg: TrainBenchConfig):
    """``model.training_loss`` under torch.compile, at ``cfg.compile_scope``."""
    if cfg.compile_scope == "model":
        return torch.compile(model.training_loss, backend=cfg.compile_backend, dynamic=False)
    if cfg.compile_scope == "cells":
        for m in model.modules():
            if isinstance(m, CellBase):
                m.compile(backend=cfg.compile_backend, dynamic=False)
        return model.training_loss
    raise ValueError(f"compile_scope must be 'model' or 'cells', got {cfg.compile_scope!r}")


def iteration(loss_fn, opt, frames, conv_algorithm: str | None = None):
    """One training iteration as a zero-argument callable (with the CPU convolutions forced
    to ``conv_algorithm`` inside it, when given)."""
    def run():
        opt.zero_grad(set_to_none=True)
        loss_fn(frames).backward()
        opt.step()
    if conv_algorithm is None:
        return run

    def forced():
        with conv_setting.conv_algorithm(conv_algorithm):
            run()
    return forced


def _state_bytes(model, opt) -> int:
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    for state in opt.state.values():
        n += sum(t.numel() * t.element_size() for t in state.values()
                 if isinstance(t, torch.Tensor))
    return n


def peak_iteration_bytes(model, opt, loss_fn, frames, device) -> int:
    """Parameters + optimizer state + the batch + the allocator's peak above them during one
    iteration (activations, gradients, workspaces)."""
    opt.zero_grad(set_to_none=True)

    def body():
        loss_fn(frames).backward()
        opt.step()

    p = timing.peak_cuda_bytes(body, device)
    return p["peak"] - p["base"] + _state_bytes(model, opt) + frames.numel() * frames.element_size()


def _config_dict(cfg: TrainBenchConfig, batch: int, repeats: int, device) -> dict:
    return {"preset": cfg.preset, "batch": batch, "models": list(cfg.models),
            "variants": list(cfg.variants), "compile_backend": cfg.compile_backend,
            "compile_scope": cfg.compile_scope, "repeats": repeats,
            "warmup": cfg.warmup, "lr": cfg.lr, "overrides": dict(cfg.overrides),
            "seq_len_overridden": cfg.input_len is not None or cfg.pred_len is not None,
            "conv_algorithm": conv_setting.get_conv_algorithm(),
            "memory": "peak CUDA" if device.type == "cuda" else "saved for backward"}


def run_training(cfg: TrainBenchConfig, progress: bool = True, emit=None) -> dict:
    """Measures every (model, variant) of ``cfg``; returns the JSON-ready result.

    ``emit(kind, record)``, when given, receives ``("start", {machine, config, ...})`` and
    then each model's ``("row", row)`` as it is measured (as :func:`run_kernels` does);
    :func:`assemble` rebuilds the result from them."""
    from tqdm.auto import tqdm

    device = cfg.device
    batch = cfg.resolved_batch()
    repeats = cfg.repeats or (10 if device.type == "cuda" else 3)
    started = time.time()
    info = timing.machine_info(device)
    start = {"device": device.type, "quick": cfg.quick, "machine": info,
             "config": _config_dict(cfg, batch, repeats, device)}
    if emit:
        emit("start", start)
    rows = []
    bar = tqdm(cfg.models, desc="training", disable=not progress, leave=False)
    for name in bar:
        bar.set_postfix_str(name)
        built = {v: build_model(name, cfg, v) for v in cfg.variants}
        first = next(iter(built.values()))
        for m in built.values():  # same weights for all
            m.load_state_dict(first.state_dict())
        t_in, t_out = first.input_len, first.pred_len
        c = first.frame_channels
        h, w = first.frame_size or (64, 64)
        gen = torch.Generator().manual_seed(0)
        frames = torch.rand(batch, t_in + t_out, c, h, w, generator=gen).to(device)
        row = {"model": name, "params": models.count_params(first),
               "flops": (models.count_flops(first, (1, t_in, c, h, w), t_out)
                         if cfg.flops else None),
               "frames": [batch, t_in + t_out, c, h, w], "input_len": t_in, "pred_len": t_out,
               "variants": {}}
        fns = {}
        for v, model in built.items():
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
            loss_fn = compiled_loss(model, cfg) if v == "compiled" else model.training_loss
            entry = {"backend": model.backend if v != "compiled" else "reference"}
            if v == "compiled":  # the first call compiles (forward and backward graphs)
                bar.set_postfix_str(f"{name}: compiling")
                entry["compile_s"] = timing.measure_once(iteration(loss_fn, opt, frames),
                                                         device)
            else:
                entry["saved_bytes"] = saved_tensor_bytes(
                    lambda m=model, f=frames: m.training_loss(f), exclude=model.parameters())
            fns[v] = iteration(loss_fn, opt, frames,
                               "onednn" if v == "fused_onednn" else None)
            if device.type == "cuda":
                fns[v]()  # the optimizer state exists from the second iteration on
                entry["peak_bytes"] = peak_iteration_bytes(model, opt, loss_fn, frames, device)
            row["variants"][v] = entry
        bar.set_postfix_str(f"{name}: timing")
        times = timing.time_side_by_side(fns, repeats, cfg.warmup, device)
        for v, t in times.items():
            row["variants"][v]["time_s"] = t
        rows.append(row)
        if emit:
            emit("row", row)
        del built, fns
        gc.collect()
    bar.close()
    result = assemble(start, rows)
    result["elapsed_s"] = time.time() - started
    result["machine"]["load_average_end"] = timing.machine_info(device)["load_average"]
    return result


def assemble(start: dict, rows: list) -> dict:
    """The result of :func:`run_training` from its emitted parts (all, or a stopped run's)."""
    result = {"schema": SCHEMA, "what": "training", **start, "rows": list(rows)}
    result["machine"] = dict(result["machine"])
    result["targets"] = check_train_targets(result)
    return result


# ------------------------------------------------------------------------------ Markdown
def fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def fmt_flops(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e9:.1f}G"


def fmt_memory(n: int | None) -> str:
    """The paper's G, as binary units (G = 2^30 bytes, M = 2^20)."""
    if n is None:
        return "—"
    return f"{n / 2**30:.2f}G" if n >= 2**30 else f"{n / 2**20:.0f}M"


def fmt_time(s: float) -> str:
    return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.1f} ms"


def memory_of(entry: dict, device: str) -> int | None:
    return entry.get("peak_bytes") if device == "cuda" else entry.get("saved_bytes")


def table_lines(result: dict) -> list[str]:
    """The MS-LSTM-format table (one row per model and variant) with ratios to eager."""
    device = result["device"]
    mem_head = "Memory (peak CUDA)" if device == "cuda" else "Memory (saved for backward)"
    lines = [(f"| Model | Variant | Params | {mem_head} | FLOPs | Time / iter "
             "| Speedup vs eager | Memory vs eager |"), "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        v = row["variants"]
        eager = v.get("eager")
        for name, e in v.items():
            mem = memory_of(e, device)
            t = e["time_s"]["median"]
            speed = (f"{eager['time_s']['median'] / t:.2f}x" if eager and name != "eager"
                     else "—")
            emem = memory_of(eager, device) if eager else None
            ratio = f"{mem / emem:.2f}" if mem is not None and emem and name != "eager" \
                else "—"
            label = name if name in ("eager", "compiled") else f"{name} ({e['backend']})"
            lines.append(f"| {row['model']} | {label} | {fmt_params(row['params'])} | "
                         f"{fmt_memory(mem)} | {fmt_flops(row['flops'])} | {fmt_time(t)} | "
                         f"{speed} | {ratio} |")
    return lines


def format_training(result: dict) -> str:
    """The Markdown report of :func:`run_training`'s result."""
    from .kernels import _machine_line, _targets_lines, load_warning

    cfg = result["config"]
    row0 = result["rows"][0] if result["rows"] else None
    shape = (f"frames {'x'.join(str(s) for s in row0['frames'])} (B x T x C x H x W), "
             f"{row0['input_len']} -> {row0['pred_len']}" if row0 else "")
    lines = [(f"# fastcells training cost ({result['device']}, preset {cfg['preset']}, "
             f"batch {cfg['batch']})"), "", _machine_line(result["machine"]), "",
             *load_warning(result["machine"]),
             (f"One training iteration, {shape}, fp32, Adam; medians of {cfg['repeats']} "
             "interleaved repeats after warm-up."), ""]
    if result.get("quick") or cfg.get("seq_len_overridden") or cfg.get("overrides"):
        lines += [(f"**Not the paper's setting**: {'quick run; ' if result.get('quick') else ''}"
                  f"sequence or model overridden ({cfg.get('overrides') or 'lengths'})."), ""]
    if result["device"] == "cpu" and cfg["batch"] != 16:
        lines += [f"Batch {cfg['batch']} on CPU (the GPU tables use 16).", ""]
    if result["device"] == "cpu" and cfg.get("conv_algorithm"):
        setting = cfg["conv_algorithm"]
        said = (setting["forward"] if len(set(setting.values())) == 1
                else ", ".join(f"{k}={v}" for k, v in setting.items()))
        lines += [f"`fused` ran its convolutions with the `{said}` setting "
                  "(`fastcells.set_conv_algorithm`); `fused_onednn` is the same model with "
                  "every convolution on oneDNN.", ""]
    lines += table_lines(result) + [""]
    compiled = [(r["model"], r["variants"]["compiled"]["compile_s"]) for r in result["rows"]
                if "compiled" in r["variants"]]
    if compiled:
        lines += ["Compile time (first call, excluded above; scope "
                  f"`{cfg['compile_scope']}`, backend `{cfg['compile_backend']}`): "
                  + ", ".join(f"{m} {s:.0f} s" for m, s in compiled) + ".", ""]
    elif "compiled" not in cfg["variants"]:
        lines += [("The `compiled` baseline was not measured (`--no-compile`, the default with "
                  "`--quick`)."), ""]
    lines += [
        "Params: all parameters. " + (
            "Memory: CUDA allocator peak of one iteration plus parameters, optimizer state "
            "and the batch (G = 2^30 bytes). " if result["device"] == "cuda" else
            "Memory: bytes autograd saves for backward in one iteration (exact; PyTorch has "
            "no CPU peak counter), not the process's peak; not countable for `compiled` "
            "(saved-tensor hooks do not see into compiled graphs). ")
        + "FLOPs: fvcore, batch 1, the whole rollout, one multiply-add = one flop (the "
          "papers' convention). Time: one iteration (forward, backward, Adam step).", ""]
    lines += _targets_lines(result.get("targets", []))
    return "\n".join(lines)
