"""PNG plots of a run (loss curves, per-frame metrics) and of predictions (strips, GIFs).

matplotlib is imported lazily with the non-interactive Agg backend (no display needed)."""
from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def loss_curves(train: list[dict], val: list[dict], path: str) -> None:
    """Training loss and validation MSE against the update step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss",
                alpha=0.7)
    if val:
        ax.plot([r["step"] for r in val], [r["mse_per_pixel"] for r in val], "o-",
                label="val MSE (per pixel)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss / MSE (log scale)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def per_frame_metrics(curves: dict[str, list[float]], path: str) -> None:
    """One panel per metric: its value at each predicted frame."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2))
    for ax, (name, values) in zip(np.atleast_1d(axes), curves.items()):
        ax.plot(range(1, len(values) + 1), values, "o-")
        ax.set_title(name)
        ax.set_xlabel("predicted frame")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _frame_image(frame: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) or (H, W, 3) for imshow (2 channels: their mean)."""
    frame = np.clip(frame, 0, 1)
    if frame.shape[0] == 3:
        return frame.transpose(1, 2, 0)
    return frame.mean(0)


def prediction_strip(inputs: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                     path: str) -> None:
    """Rows: given frames, true future, predicted future; each (T, C, H, W) in [0, 1]."""
    plt = _plt()
    cols = max(len(inputs), len(truth))
    fig, axes = plt.subplots(3, cols, figsize=(1.2 * cols, 3.8), squeeze=False)
    for row, (name, frames) in enumerate((("input", inputs), ("truth", truth),
                                          ("prediction", prediction))):
        for col in range(cols):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(frames):
                ax.imshow(_frame_image(frames[col]), cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(name, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


GIF_MIN_SIDE = 256  # frames smaller than this are upscaled (nearest) to be seen at all


def prediction_gif(truth: np.ndarray, prediction: np.ndarray, path: str, fps: int = 4) -> None:
    """Animated GIF: truth (left) and prediction (right) side by side, (T, C, H, W) each,
    upscaled to at least ``GIF_MIN_SIDE`` pixels high (nearest neighbour, so pixels stay
    pixels), under a label row ("truth", "prediction", frame t+k)."""
    from PIL import Image, ImageDraw

    scale = max(1, -(-GIF_MIN_SIDE // truth.shape[-2]))
    frames = []
    for t in range(len(prediction)):
        panels = [_frame_image(truth[t]), _frame_image(prediction[t])]
        images = [Image.fromarray((p * 255).astype(np.uint8)).convert("RGB") for p in panels]
        w, h = images[0].width * scale, images[0].height * scale
        canvas = Image.new("RGB", (2 * w + 4, h + 18), "white")
        for i, (img, label) in enumerate(zip(images, ("truth", "prediction"))):
            canvas.paste(img.resize((w, h), Image.NEAREST), (i * (w + 4), 18))
            ImageDraw.Draw(canvas).text((i * (w + 4) + 3, 3), f"{label}  t+{t + 1}",
                                        fill="black")
        frames.append(canvas)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=1000 // fps,
                   loop=0)
