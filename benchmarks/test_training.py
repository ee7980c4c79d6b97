"""pytest-benchmark: one training iteration of zoo presets, eager vs fused vs compiled.

    pytest benchmarks/test_training.py --benchmark-group-by=group

Models ``convlstm``, ``predrnn`` and ``ms_lstm`` at the mmnist preset (10 -> 10 frames);
batch ``FASTCELLS_BENCH_BATCH`` (default 16 on CUDA, 1 on CPU, where an iteration of B=1
already takes seconds). An iteration is zero_grad, ``training_loss`` (teacher forcing),
backward and an Adam step, as in ``python -m fastcells.bench train``, which prints the
paper-format table (Params, Memory, FLOPs, Time) with the ratios measured side by side.
"""
import os

import pytest
import torch
from conftest import COMPILE, device_dtypes, timed

from fastcells.bench import timing, training
from fastcells.utils import saved_tensor_bytes

MODELS = ("convlstm", "predrnn", "ms_lstm")
VARIANTS = [v for v in training.VARIANTS if COMPILE or v != "compiled"]
DEVICES = sorted({d for d, dtype in device_dtypes() if dtype == torch.float32})


def _batch(device: str) -> int:
    default = 16 if torch.device(device).type == "cuda" else 1
    return int(os.environ.get("FASTCELLS_BENCH_BATCH", default))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("device", DEVICES)
def test_training_iteration(benchmark, device, model_name, variant):
    torch._dynamo.reset()
    cfg = training.TrainBenchConfig(device=torch.device(device), batch=_batch(device))
    model = training.build_model(model_name, cfg, variant)
    frames = torch.rand(cfg.resolved_batch(), model.input_len + model.pred_len,
                        model.frame_channels, *model.frame_size).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss = training.compiled_loss(model, cfg) if variant == "compiled" else model.training_loss
    step = training.iteration(loss, opt, frames)
    benchmark.group = f"train {model_name} {device} B={cfg.resolved_batch()}"
    benchmark.extra_info.update(variant=variant, params=sum(p.numel() for p in model.parameters()),
                                frames=list(frames.shape))
    if variant == "compiled":
        benchmark.extra_info["compile_s"] = timing.measure_once(step, torch.device(device))
    else:
        benchmark.extra_info["saved_bytes"] = saved_tensor_bytes(
            lambda: model.training_loss(frames), exclude=model.parameters())
    if torch.device(device).type == "cuda":
        step()
        benchmark.extra_info["peak_bytes"] = training.peak_iteration_bytes(
            model, opt, loss, frames, torch.device(device))
    benchmark.pedantic(timed(step, device), rounds=3, warmup_rounds=1)
