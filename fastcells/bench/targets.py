"""The issues' targets, checked against a result: every figure is reported, met or not.

- CPU cell steps (the foundation issue, as quoted in benchmarks/NOTES.md): a fused cell step
  forward + backward at B=4, C=32, 64x64, float32 at least 1.2x faster than the reference
  for ConvLSTM and 1.3x for ST-LSTM and MK-LSTM; saved-for-backward bytes of the fused
  default at most 0.9x the reference's.
- GPU training iterations (the benchmarks issue): ``convlstm``, ``predrnn`` and ``ms_lstm``
  with the mmnist preset at B=16: the fused model at least 2x faster than eager, its peak
  memory at most 0.9x eager's, and at most 0.65x with ``memory_efficient=True``.
"""
from __future__ import annotations

CPU_STEP_SPEEDUP = {"convlstm": 1.2, "stlstm": 1.3, "mklstm": 1.3}
CPU_SAVED_RATIO = 0.9
GPU_TRAIN_MODELS = ("convlstm", "predrnn", "ms_lstm")
GPU_TRAIN_SPEEDUP = 2.0
GPU_TRAIN_PEAK = {"fused": 0.9, "fused_memeff": 0.65}


def _target(what: str, measured: float, threshold: float, at_least: bool) -> dict:
    met = measured >= threshold if at_least else measured <= threshold
    return {"what": what, "measured": measured, "threshold": threshold,
            "at_least": at_least, "met": bool(met)}


def check_kernel_targets(result: dict) -> list[dict]:
    """The CPU step targets, for the rows of a kernels result that they apply to."""
    if result["device"] != "cpu":
        return []
    out = []
    for r in result["rows"]:
        fused = r.get("auto")
        if (r["kind"], r["mode"], r["dtype"], r["size"]) != ("step", "fwd+bwd", "fp32", "small") \
                or r["cell"] not in CPU_STEP_SPEEDUP or fused not in r["times"] \
                or "reference" not in r["times"]:
            continue
        speed = r["times"]["reference"]["median"] / r["times"][fused]["median"]
        out.append(_target(f"{r['cell']} step fwd+bwd, {fused} vs reference (small, fp32): "
                           f">= {CPU_STEP_SPEEDUP[r['cell']]}x", speed,
                           CPU_STEP_SPEEDUP[r["cell"]], True))
    for e in result["memory"]:
        fused = e.get("auto")
        stack = e.get("stack_saved", {})
        if (e["dtype"], e["size"]) != ("fp32", "small") or fused not in stack:
            continue
        out.append(_target(f"{e['cell']} saved for backward (2x6 stack), {fused} / reference: "
                           f"<= {CPU_SAVED_RATIO}", stack[fused] / stack["reference"],
                           CPU_SAVED_RATIO, False))
    return out


def check_train_targets(result: dict) -> list[dict]:
    """The GPU training targets, for a CUDA training result at the mmnist preset, B=16."""
    cfg = result["config"]
    if result["device"] != "cuda" or cfg["preset"] != "mmnist" or cfg["batch"] != 16 \
            or cfg.get("overrides") or cfg.get("seq_len_overridden"):
        return []
    out = []
    for row in result["rows"]:
        if row["model"] not in GPU_TRAIN_MODELS:
            continue
        v = row["variants"]
        if "eager" not in v:
            continue
        eager = v["eager"]
        if "fused" in v:
            out.append(_target(f"{row['model']} training iteration, fused vs eager: >= "
                               f"{GPU_TRAIN_SPEEDUP}x", eager["time_s"]["median"]
                               / v["fused"]["time_s"]["median"], GPU_TRAIN_SPEEDUP, True))
        for name, limit in GPU_TRAIN_PEAK.items():
            if name in v and v[name].get("peak_bytes") and eager.get("peak_bytes"):
                out.append(_target(f"{row['model']} peak memory, {name} / eager: <= {limit}",
                                   v[name]["peak_bytes"] / eager["peak_bytes"], limit, False))
    return out
