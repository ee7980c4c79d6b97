"""The README's first command: train MS-LSTM on built-in synthetic Moving MNIST for a few
minutes on a CPU, evaluate it, plot, and compare the fused and reference backends.

    python -m fastcells demo [--steps 120] [--out runs/demo]

The model is the ``ms_lstm`` mmnist preset (6 MK-LSTM layers in the mirrored pyramid,
64x64 frames) made small enough for a laptop CPU: 16 hidden channels, 5 -> 5 frames.
"""
from __future__ import annotations

import copy
import os

import torch

from . import backends, models
from .bench import machine_info, time_side_by_side
from .train import TrainConfig, Trainer, evaluate_model


def demo_config(out_dir: str, steps: int, seed: int) -> TrainConfig:
    return TrainConfig(model="ms_lstm", preset="mmnist", model_args={"hidden_size": 16},
                       input_len=5, pred_len=5, data="synthetic", num_sequences=1200,
                       batch_size=4, steps=steps, lr=3e-3, schedule="cosine",
                       # PredRNN's scheduled sampling, compressed: true frames at the output
                       # steps with a probability falling from 1 to 0 over half the run, so
                       # training ends as evaluation runs (on the model's own predictions)
                       sampling="scheduled", sampling_stop_iter=max(1, steps // 2),
                       sampling_changing_rate=1 / max(1, steps // 2),
                       warmup_steps=min(10, steps), min_lr_ratio=0.1, clip_grad=1.0,
                       eval_every=max(1, steps // 3), eval_batches=6,
                       checkpoint_every=steps, out_dir=out_dir, seed=seed)


def run_demo(out_dir: str = "runs/demo", steps: int = 120, seed: int = 0) -> dict:
    cfg = demo_config(out_dir, steps, seed)
    trainer = Trainer(cfg, overwrite=True)
    print(f"demo: training {cfg.model} ({cfg.model_args}) on synthetic Moving MNIST, "
          f"backend {trainer.model.backend}, {steps} steps of batch {cfg.batch_size}")
    after = trainer.fit()
    before = trainer.val_log.read()[0]  # fit evaluates the untrained model first

    # The trained weights on every available backend: same metrics, different speed.
    rows = []
    batch = torch.stack([trainer.train_set[i] for i in range(cfg.batch_size)])
    runs = {}
    for backend in [b for b in ("cpp", "reference") if b in backends.available_backends()]:
        model = models.create(cfg.model, preset=cfg.preset, backend=backend, **cfg.model_args)
        model.load_state_dict(trainer.model.state_dict())
        metrics = evaluate_model(model, trainer.val_set, trainer.input_len, trainer.pred_len,
                                 cfg.batch_size, torch.device("cpu"), cfg.eval_batches)
        train_copy = copy.deepcopy(model).train()

        def step(m=train_copy):
            m.zero_grad(set_to_none=True)
            m.training_loss(batch).backward()

        runs[backend] = step
        rows.append([backend, metrics["mse_per_frame"], metrics["ssim"], metrics["psnr"]])
    # At least 7 interleaved repeats (about 20 s): with 3, this shared 2-core machine's
    # noise moved the ratio by 10-15% between runs of the same code.
    times = time_side_by_side(runs, warmup=1, budget_s=20.0, min_repeats=7, max_repeats=15)
    table = ["| backend | MSE/frame | SSIM | PSNR (dB) | s per training step |",
             "|---|---|---|---|---|"]
    for backend, mse, ssim, psnr in rows:
        table.append(f"| {backend} | {mse:.2f} | {ssim:.4f} | {psnr:.2f} | "
                     f"{times[backend]['median']:.3f} |")
    if "cpp" in times and "reference" in times:
        table.append(f"\nfused speedup per training step: "
                     f"{times['reference']['median'] / times['cpp']['median']:.2f}x")
    info = machine_info()
    report = "\n".join([
        "# fastcells demo", "",
        (f"{cfg.model} {cfg.model_args} on synthetic Moving MNIST (64x64, "
         f"{trainer.input_len} -> {trainer.pred_len} frames), {steps} steps of batch "
         f"{cfg.batch_size}; {info['processor']}, {info['threads']} threads, torch "
         f"{info['torch']}, {info['date']}."), "",
        improvement_line(before["mse_per_frame"], after["mse_per_frame"]), "",
        *table, "",
        ("Files: loss_curves.png, per_frame_metrics.png, predictions.png/.gif, "
         "train.jsonl/csv, val.jsonl/csv, last.pt, best.pt."), ""])
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(report)
    print(report)
    print(f"wrote {out_dir}/report.md")
    return {"before": before, "after": after, "rows": rows, "times": times}


def improvement_line(before: float, after: float) -> str:
    """The validation MSE before and after training, in words that fit what happened."""
    head = f"Validation MSE per frame: {before:.2f} before training, {after:.2f} after"
    if not (after < before * (1 - 5e-3)):  # within rounding of the printed figures
        return (head + (": the run did not improve it (too few steps, or a learning rate "
                        "too high or too low)." if after <= before * (1 + 5e-3) else
                        ": the run made it worse (the learning rate is likely too high)."))
    return head + f" ({100 * (1 - after / before):.0f}% lower)."
