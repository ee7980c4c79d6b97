"""Metrics for video prediction and nowcasting.

Every metric takes ``pred`` and ``target`` tensors of shape (B, T, C, H, W) (or single
frames (B, C, H, W)), floating point, values in [0, ``data_range``] (default 1.0).

* Pixel errors, two conventions (:mod:`.pixel`): ``mse_per_frame`` / ``mae_per_frame``
  sum the error over each frame's (C, H, W) and average over batch and time (the
  PredRNN/OpenSTL tables: Moving MNIST MSE in the tens); ``mse_per_pixel`` /
  ``mae_per_pixel`` are the plain means.
* ``psnr`` (per frame, averaged) and ``ssim`` (Gaussian window, equal to skimage's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``).
* Skill scores at thresholds (:mod:`.skill`): ``csi``, ``hss``, ``pod``, ``far`` from the
  contingency table of ``pred >= thr`` vs ``target >= thr``; 0/0 is NaN.
* ``LPIPS`` with user-supplied weights (:mod:`.lpips`; never downloads).
* ``FVD``, the Fréchet video distance from the features of a video detector you supply
  (:mod:`.fvd`; the I3D TorchScript file of StyleGAN-V; never downloads): accumulates real
  and generated videos over batches, ``compute()`` gives one number for the whole set.
* ``per_frame`` curves and ``MetricTracker`` (accumulates over batches for evaluation).

``reduction="none"`` gives per-frame values (B, T) for the pixel metrics, PSNR, SSIM, LPIPS.
"""
from .fvd import FVD, frechet_distance
from .lpips import LPIPS
from .pixel import mae_per_frame, mae_per_pixel, mse_per_frame, mse_per_pixel, psnr
from .skill import FIELDS, contingency, csi, far, hss, pod, scores
from .ssim import gaussian_window, ssim
from .tracker import DEFAULT_METRICS, FRAME_METRICS, MetricTracker, per_frame

__all__ = [
    "DEFAULT_METRICS", "FIELDS", "FRAME_METRICS", "FVD", "LPIPS", "MetricTracker",
    "contingency", "csi", "far", "frechet_distance", "gaussian_window", "hss", "mae_per_frame",
    "mae_per_pixel", "mse_per_frame", "mse_per_pixel", "per_frame", "pod", "psnr", "scores",
    "ssim",
]
