"""The FVD evaluation code that VDT/MCVD-style evaluations run, re-created for tests (not
copied): JunyaoHu/common_metrics_on_video_quality's ``fvd/styleganv/fvd.py`` (itself from
universome/fvd-comparison and StyleGAN-V):

* ``preprocess_single(video (C, T, H, W) in [0, 1], resolution=224, sequence_length=None)``:
  keep the first ``sequence_length`` frames, bilinear-resize (align_corners=False) so the
  shorter side is ``resolution`` and the other ``ceil(side * resolution / shorter)``,
  centre-crop ``resolution`` x ``resolution`` at ((size - resolution) // 2), map to [-1, 1]
  by ``(x - 0.5) * 2``;
* ``get_feats``: videos (B, C, T, H, W) in chunks of 10 through the detector called with
  ``rescale=False, resize=False, return_features=True``, stacked as numpy;
* ``frechet_distance(fake, real)``: means, ``np.cov(rowvar=False)`` (N - 1), ``scipy.linalg.
  sqrtm(sigma_fake @ sigma_real)``, real part of ``|mu_f - mu_r|^2 + tr(S_f + S_r - 2 sqrt)``;
* StyleGAN-V's ``FeatureStats``: float64 raw sums ``sum x`` and ``sum x x^T``, covariance
  ``sum x x^T / N - mu mu^T`` (population, N).
"""
import math

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F


def preprocess_single(video, resolution=224, sequence_length=None):
    c, t, h, w = video.shape
    if sequence_length is not None:
        video = video[:, :sequence_length]
    scale = resolution / min(h, w)
    if h < w:
        target = (resolution, math.ceil(w * scale))
    else:
        target = (math.ceil(h * scale), resolution)
    # a (C, T, H, W) tensor: interpolate sees C as the batch, T as channels
    video = F.interpolate(video, size=target, mode="bilinear", align_corners=False)
    _, _, h, w = video.shape
    top, left = (h - resolution) // 2, (w - resolution) // 2
    video = video[:, :, top:top + resolution, left:left + resolution]
    return ((video - 0.5) * 2).contiguous()


def get_feats(videos_bcthw, detector, resolution=224, bs=10):
    feats = []
    with torch.no_grad():
        for i in range(0, len(videos_bcthw), bs):
            batch = torch.stack([preprocess_single(v, resolution)
                                 for v in videos_bcthw[i:i + bs]])
            feats.append(detector(batch, rescale=False, resize=False,
                                  return_features=True).numpy())
    return np.concatenate(feats).astype(np.float64)


def frechet_distance(feats_fake, feats_real):
    mu_f, mu_r = feats_fake.mean(0), feats_real.mean(0)
    s_f, s_r = np.cov(feats_fake, rowvar=False), np.cov(feats_real, rowvar=False)
    root = scipy.linalg.sqrtm(s_f @ s_r)
    return float(np.real(np.square(mu_f - mu_r).sum() + np.trace(s_f + s_r - 2 * root)))


def stylegan_v_mean_cov(feats):
    feats = np.asarray(feats, dtype=np.float64)
    n = feats.shape[0]
    mean = feats.sum(0) / n
    return mean, feats.T @ feats / n - np.outer(mean, mean)
