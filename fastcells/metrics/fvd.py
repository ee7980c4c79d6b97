"""Fréchet video distance (Unterthiner et al., 2018, "Towards Accurate Generative Models of
Video: A New Metric & Challenges") from the features of a video detector you supply:
nothing is ever downloaded.

FVD is the Fréchet distance between two Gaussians fitted to detector features of real and of
generated videos::

    FVD = |mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2))

The usual detector is the I3D network (Kinetics-400) as the TorchScript file
``i3d_torchscript.pt`` that StyleGAN-V released and that the VDT, MCVD and
common_metrics_on_video_quality evaluations load with ``torch.jit.load``. Its
``forward(x, rescale, resize, return_features)`` takes ``x`` of shape (B, 3, T, H, W);
with ``return_features=True`` it returns the 400 features before the softmax.

The defaults of :class:`FVD` are the convention of those evaluations (``preprocess_single`` of
common_metrics_on_video_quality, used by seed 002's VDT run): frames scaled so the shorter
side is 224 (bilinear), centre-cropped to 224x224, values mapped from [0, 1] to [-1, 1],
grayscale repeated to RGB, (B, T, C, H, W) permuted to (B, C, T, H, W), and the detector
called with ``rescale=False, resize=False, return_features=True``. StyleGAN-V's own metric
instead gives the detector values in [0, 255] at their stored size and lets it rescale and
resize: ``FVD(path, size=None, value_range=(0, 255), detector_kwargs=dict(rescale=True,
resize=True, return_features=True))``. Any other detector (an ``nn.Module`` or a callable
mapping the prepared batch to (B, D) features) works with ``detector_kwargs={}`` and its
own ``size``/``value_range``/``layout``.

Statistics are kept in float64 as counts, means and centred scatter matrices, merged batch by
batch (Chan et al.'s pairwise update), so any number of batches of any size gives the
statistics of the whole set; the distance is computed in float64 from eigendecompositions of
symmetric matrices (no scipy).
"""
from __future__ import annotations

import inspect
import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_range

I3D_KWARGS = {"rescale": False, "resize": False, "return_features": True}
LAYOUTS = ("BCTHW", "BTCHW")
RESIZE_MODES = ("shorter_side", "stretch")
RANGE_TOLERANCE = 1e-3   # relative to data_range: rounding of stored or resampled frames


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``mu*``: (D,) means; ``sigma*``: (D, D) symmetric positive semi-definite covariances
    (tensors or arrays). ``tr((S1 S2)^(1/2))`` is computed as the sum of the square roots of
    the eigenvalues of the symmetric ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as ``S1 S2``);
    eigenvalues within rounding of 0 (or slightly negative) count as 0, and a total that
    rounding puts below 0 is returned as 0.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64).cpu() for m in (mu1, mu2))
    sigma1, sigma2 = (torch.as_tensor(s, dtype=torch.float64).cpu() for s in (sigma1, sigma2))
    if mu1.dim() != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"frechet_distance: means should be (D,) vectors of one size, got "
                         f"{tuple(mu1.shape)} and {tuple(mu2.shape)}")
    d = mu1.shape[0]
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if s.shape != (d, d):
            raise ValueError(f"frechet_distance: {name} should be ({d}, {d}), got "
                             f"{tuple(s.shape)}")
        if not torch.isfinite(s).all():
            raise ValueError(f"frechet_distance: {name} holds NaN or infinite values")
    if not (torch.isfinite(mu1).all() and torch.isfinite(mu2).all()):
        raise ValueError("frechet_distance: the means hold NaN or infinite values")
    # the inputs are symmetric up to rounding; eigh reads one triangle, so make them exact
    sigma1 = (sigma1 + sigma1.T) / 2
    sigma2 = (sigma2 + sigma2.T) / 2
    w, v = torch.linalg.eigh(sigma1)
    root1 = (v * _rounded_to_zero(w).sqrt()) @ v.T
    middle = root1 @ sigma2 @ root1
    ev = torch.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = _rounded_to_zero(ev).sqrt().sum()
    fd = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return max(float(fd), 0.0)


def _rounded_to_zero(ev: Tensor) -> Tensor:
    """Eigenvalues of a PSD matrix with those within rounding of 0 (the usual numerical-rank
    tolerance, D * eps * the largest) set to 0: the square root would turn a 1e-17 of
    rounding into a 3e-9 error (singular covariances: fewer videos than features)."""
    tol = ev.numel() * torch.finfo(ev.dtype).eps * ev.abs().max().clamp(min=1e-300)
    return torch.where(ev > tol, ev, torch.zeros_like(ev))


class _Moments:
    """Count, mean and centred scatter matrix (sum of outer products of deviations) of
    feature vectors, in float64, merged a batch at a time."""

    def __init__(self):
        self.n = 0
        self.mean: Tensor | None = None
        self.scatter: Tensor | None = None

    def add(self, feats: Tensor) -> None:
        feats = feats.detach().to("cpu", torch.float64)
        nb = feats.shape[0]
        if nb == 0:
            return
        mean_b = feats.mean(0)
        dev = feats - mean_b
        scatter_b = dev.T @ dev
        if self.n == 0:
            self.n, self.mean, self.scatter = nb, mean_b, scatter_b
            return
        n = self.n + nb
        delta = mean_b - self.mean
        self.scatter = self.scatter + scatter_b + torch.outer(delta, delta) * (self.n * nb / n)
        self.mean = self.mean + delta * (nb / n)
        self.n = n

    def covariance(self, unbiased: bool) -> Tensor:
        return self.scatter / (self.n - 1 if unbiased else self.n)

    def state(self) -> dict:
        return {"n": self.n, "mean": self.mean, "scatter": self.scatter}


def _load_detector(detector, device):
    if detector is None:
        raise ValueError("FVD needs a video detector and never downloads one: pass "
                         "detector= the path of a TorchScript file (the standard one is "
                         "StyleGAN-V's I3D, i3d_torchscript.pt), or an nn.Module / callable "
                         "returning (B, D) features")
    if isinstance(detector, (str, os.PathLike)):
        path = os.fspath(detector)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"FVD: detector file {path!r} not found")
        try:
            module = torch.jit.load(path, map_location=device or "cpu")
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"FVD: detector file {path!r} is not a TorchScript archive "
                             f"(torch.jit.save / the released i3d_torchscript.pt): "
                             f"{str(e).splitlines()[0] if str(e) else e!r}") from None
        return module.eval(), path
    if isinstance(detector, nn.Module):
        return detector.eval(), type(detector).__name__
    if callable(detector):
        return detector, getattr(detector, "__name__", type(detector).__name__)
    raise TypeError(f"detector: expected a TorchScript file path, an nn.Module or a callable, "
                    f"got {type(detector).__name__}")


def _module_device(module):
    if isinstance(module, nn.Module):
        for t in module.parameters():
            return t.device
        for t in module.buffers():
            return t.device
    return None


class FVD:
    """Fréchet video distance between the real and the generated videos added so far.

    Args:
        detector: the feature network: a TorchScript file path (loaded with
            ``torch.jit.load``; e.g. StyleGAN-V's ``i3d_torchscript.pt``), an ``nn.Module``
            (put in eval mode) or a callable. Required: there is no download.
        num_frames: frames per video given to the detector; longer videos are cut to their
            first ``num_frames`` (as the reference ``preprocess_single(sequence_length=)``),
            shorter ones raise. None: all frames (every video must then have the same T).
        size: spatial size the frames are resized to, an int (square) or (H, W); None: no
            resize (e.g. a detector that resizes itself). Default 224, the I3D input.
        resize: ``"shorter_side"`` (the reference convention: bilinear scaling of the shorter
            side to the target, the other side rounded up, then a centre crop) or
            ``"stretch"`` (bilinear straight to ``size``, aspect ratio not kept).
        value_range: (low, high) the detector expects; [0, ``data_range``] maps linearly onto
            it. Default (-1, 1); StyleGAN-V's I3D with ``rescale=True`` wants (0, 255).
        channels: channels the detector takes (3); single-channel videos are repeated.
        layout: ``"BCTHW"`` (I3D) or ``"BTCHW"``, the detector's input layout.
        detector_kwargs: keyword arguments of every detector call. Default
            ``{"rescale": False, "resize": False, "return_features": True}`` (the I3D
            TorchScript's features before the softmax); ``{}`` for a detector without them.
        data_range: the videos' values lie in [0, data_range] (default 1).
        batch_size: at most this many videos per detector call (memory); None: a whole
            ``update`` batch at once.
        unbiased: covariances divided by N - 1 (``np.cov``, as the MCVD / VDT /
            common_metrics evaluations do; default) or by N (StyleGAN-V's ``FeatureStats``).
        device: where the detector runs and the prepared videos go (default: the module's
            device, CPU for a file).
        dtype: dtype of the detector input (default float32, the I3D file's).

    Videos are (B, T, C, H, W) floating-point tensors with values in [0, data_range].
    ``update(real, fake)`` (or ``update_real`` / ``update_fake``) adds batches of any size
    (the two sides need not match in B); ``add_features(real=, fake=)`` adds precomputed
    (N, D) features; ``features(videos)`` returns a batch's (B, D) float64 features;
    ``compute()`` returns the distance as a float (each side needs at least 2 videos; with
    fewer videos than feature dimensions the covariances are singular and FVD is biased
    upwards: the usual protocols use 256 or more, 2048 for StyleGAN-V); ``reset()`` clears
    both sides (``reset(fake_only=True)`` keeps the real statistics, e.g. to score several
    models against one real set); ``state_dict()`` / ``load_state_dict()`` save and restore
    the statistics; ``all_reduce()`` combines them across ``torch.distributed`` processes.
    """

    def __init__(self, detector=None, *, num_frames: int | None = None, size=224,
                 resize: str = "shorter_side", value_range=(-1.0, 1.0), channels: int = 3,
                 layout: str = "BCTHW", detector_kwargs: dict | None = None,
                 data_range: float = 1.0, batch_size: int | None = None, unbiased: bool = True,
                 device=None, dtype: torch.dtype = torch.float32):
        self.num_frames = _positive_int_or_none(num_frames, "num_frames")
        self.size = _size(size)
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize: expected one of {RESIZE_MODES}, got {resize!r}")
        self.resize = resize
        self.value_range = _value_range(value_range)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels: expected a positive int, got {channels!r}")
        self.channels = channels
        if layout not in LAYOUTS:
            raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        if detector_kwargs is None:
            detector_kwargs = I3D_KWARGS
        if not isinstance(detector_kwargs, dict):
            raise TypeError(f"detector_kwargs: expected a dict, got "
                            f"{type(detector_kwargs).__name__}")
        self.detector_kwargs = dict(detector_kwargs)
        self.data_range = check_range(data_range)
        self.batch_size = _positive_int_or_none(batch_size, "batch_size")
        if not isinstance(unbiased, bool):
            raise TypeError(f"unbiased: expected a bool, got {type(unbiased).__name__}")
        self.unbiased = unbiased
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype: expected a floating-point torch.dtype, got {dtype!r}")
        self.dtype = dtype
        device = torch.device(device) if device is not None else None
        self.detector, self.detector_name = _load_detector(detector, device)
        if device is not None and isinstance(self.detector, nn.Module):
            self.detector.to(device)
        self.device = device or _module_device(self.detector) or torch.device("cpu")
        self._check_kwargs()
        self.reset()

    def _check_kwargs(self) -> None:
        """Refuses, before any video is read, detector_kwargs the detector does not take."""
        if not self.detector_kwargs:
            return
        forward = getattr(self.detector, "forward", self.detector)
        schema = getattr(forward, "schema", None)
        if schema is not None:       # a TorchScript method
            names = {a.name for a in schema.arguments}
        else:
            try:
                params = inspect.signature(forward).parameters.values()
            except (TypeError, ValueError):
                return               # no signature to read (some builtins): the call tells
            if any(p.kind is p.VAR_KEYWORD for p in params):
                return
            names = {p.name for p in params if p.kind is not p.VAR_POSITIONAL}
        unknown = sorted(set(self.detector_kwargs) - names)
        if unknown:
            raise TypeError(f"FVD: detector {self.detector_name} takes no argument(s) "
                            f"{unknown} of detector_kwargs={self.detector_kwargs} (the "
                            f"default ones are the I3D TorchScript's); pass "
                            f"detector_kwargs={{}} or the detector's own")

    # ------------------------------------------------------------------ state
    def reset(self, fake_only: bool = False) -> None:
        """Clears the statistics (only the generated side's with ``fake_only=True``)."""
        if not fake_only:
            self._real = _Moments()
        self._fake = _Moments()
        if self._real.n == 0:
            self._dim = None               # feature dimensions seen so far
            self._frames = None            # frames per video seen so far

    @property
    def count_real(self) -> int:
        return self._real.n

    @property
    def count_fake(self) -> int:
        return self._fake.n

    def to(self, device) -> FVD:
        """Moves the detector (a module) and where the prepared videos go; returns self."""
        device = torch.device(device)
        if isinstance(self.detector, nn.Module):
            self.detector.to(device)
        self.device = device
        return self

    def state_dict(self) -> dict:
        """The statistics (counts, float64 means and scatter matrices), on the CPU."""
        return {"real": self._real.state(), "fake": self._fake.state(), "dim": self._dim,
                "frames": self._frames}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or set(state) != {"real", "fake", "dim", "frames"}:
            raise ValueError("FVD.load_state_dict: expected a dict from FVD.state_dict() "
                             "(keys real, fake, dim, frames)")
        sides = []
        for side in ("real", "fake"):
            s = state[side]
            m = _Moments()
            m.n = int(s["n"])
            if m.n:
                m.mean = torch.as_tensor(s["mean"], dtype=torch.float64).clone()
                m.scatter = torch.as_tensor(s["scatter"], dtype=torch.float64).clone()
                d = state["dim"]
                if m.mean.shape != (d,) or m.scatter.shape != (d, d):
                    raise ValueError(f"FVD.load_state_dict: {side} statistics have shapes "
                                     f"{tuple(m.mean.shape)} and {tuple(m.scatter.shape)}, "
                                     f"expected ({d},) and ({d}, {d})")
            sides.append(m)
        self._real, self._fake = sides
        self._dim, self._frames = state["dim"], state["frames"]

    # ------------------------------------------------------------------ features
    def prepare(self, videos: Tensor, name: str = "videos") -> Tensor:
        """(B, T, C, H, W) videos in [0, data_range] -> the detector's input: frames cut to
        ``num_frames``, channels repeated, resized, mapped to ``value_range``, laid out as
        ``layout``, on ``device`` in ``dtype``."""
        if not isinstance(videos, Tensor):
            raise TypeError(f"FVD: {name} should be a Tensor (B, T, C, H, W), got "
                            f"{type(videos).__name__}")
        if not videos.is_floating_point():
            raise TypeError(f"FVD: {name} should be a floating-point tensor with values in "
                            f"[0, data_range={self.data_range:g}], got {videos.dtype}")
        if videos.dim() != 5:
            raise ValueError(f"FVD: {name} should have shape (B, T, C, H, W), got "
                             f"{tuple(videos.shape)}")
        b, t, c, h, w = videos.shape
        if self.num_frames is not None:
            if t < self.num_frames:
                raise ValueError(f"FVD: {name} have {t} frames, fewer than num_frames="
                                 f"{self.num_frames}")
            videos = videos[:, :self.num_frames]
            t = self.num_frames
        if c != self.channels and c != 1:
            raise ValueError(f"FVD: {name} have {c} channels; the detector takes "
                             f"channels={self.channels} (or 1, repeated)")
        if 0 in videos.shape:
            raise ValueError(f"FVD: {name} should not be empty, got {tuple(videos.shape)}")
        low, high = videos.aminmax()
        low, high = float(low), float(high)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"FVD: {name} hold NaN or infinite values")
        tol = RANGE_TOLERANCE * self.data_range
        if low < -tol or high > self.data_range + tol:
            raise ValueError(f"FVD: {name} have values in [{low:g}, {high:g}]; expected "
                             f"[0, data_range={self.data_range:g}] (videos in [-1, 1]: pass "
                             f"(x + 1) / 2)")
        x = videos.to(self.device, self.dtype)
        # (B, T, C, H, W) -> (B*T, C, H, W): interpolate resizes each frame on its own
        x = x.reshape(b * t, c, h, w)
        if self.size is not None and (h, w) != self.size:
            x = self._resize(x)
        if c == 1 and self.channels != 1:
            x = x.expand(-1, self.channels, -1, -1)
        low_v, high_v = self.value_range
        x = x * ((high_v - low_v) / self.data_range) + low_v
        x = x.reshape(b, t, *x.shape[1:])
        if self.layout == "BCTHW":
            x = x.permute(0, 2, 1, 3, 4)
        return x.contiguous()

    def _resize(self, x: Tensor) -> Tensor:
        th, tw = self.size
        h, w = x.shape[-2:]
        if self.resize == "stretch":
            return F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
        # the reference's order of operations (scale first, then the rounded-up side), so
        # the sizes match it exactly
        if th / h >= tw / w:
            scale = th / h
            nh, nw = th, math.ceil(w * scale)
        else:
            scale = tw / w
            nh, nw = math.ceil(h * scale), tw
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        top, left = (nh - th) // 2, (nw - tw) // 2
        return x[..., top:top + th, left:left + tw]

    @torch.no_grad()
    def features(self, videos: Tensor, name: str = "videos") -> Tensor:
        """The detector's (B, D) features of (B, T, C, H, W) videos, float64 on the CPU."""
        x = self.prepare(videos, name)
        step = self.batch_size or x.shape[0]
        return torch.cat([self._call(x[i:i + step]) for i in range(0, x.shape[0], step)])

    def _call(self, x: Tensor) -> Tensor:
        try:
            out = self.detector(x, **self.detector_kwargs)
        except (TypeError, RuntimeError) as e:
            raise RuntimeError(f"FVD: detector {self.detector_name} failed on input "
                               f"{tuple(x.shape)} ({self.layout}, values in "
                               f"{list(self.value_range)}, kwargs {self.detector_kwargs}): "
                               f"{e}") from e
        if not isinstance(out, Tensor):
            raise ValueError(f"FVD: detector {self.detector_name} returned "
                             f"{type(out).__name__}, expected a (B, D) feature tensor")
        while out.dim() > 2 and out.shape[-1] == 1:   # (B, D, 1, 1, 1) pooled maps
            out = out.squeeze(-1)
        if out.dim() != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(f"FVD: detector {self.detector_name} returned shape "
                             f"{tuple(out.shape)} for {x.shape[0]} videos; expected "
                             f"({x.shape[0]}, D) features")
        out = out.to("cpu", torch.float64)
        if not torch.isfinite(out).all():
            raise ValueError(f"FVD: detector {self.detector_name} returned NaN or infinite "
                             f"features")
        return out

    # ------------------------------------------------------------------ accumulation
    def update(self, real: Tensor, fake: Tensor) -> None:
        """Adds a batch of real and a batch of generated videos, (B, T, C, H, W) each (the
        batch sizes may differ)."""
        self.update_real(real)
        self.update_fake(fake)

    def update_real(self, videos: Tensor) -> None:
        self._add("real", videos)

    def update_fake(self, videos: Tensor) -> None:
        self._add("fake", videos)

    def _add(self, side: str, videos: Tensor) -> None:
        if isinstance(videos, Tensor) and videos.dim() == 5 and self.num_frames is None and \
                self._frames not in (None, videos.shape[1]):
            raise ValueError(f"FVD: {side} videos of {videos.shape[1]} frames after "
                             f"{self._frames}-frame ones; every video needs the same length "
                             f"(or pass num_frames= to cut them)")
        feats = self.features(videos, side)
        self._add_features(side, feats)
        self._frames = self.num_frames or videos.shape[1]

    def add_features(self, real: Tensor | None = None, fake: Tensor | None = None) -> None:
        """Adds precomputed (N, D) detector features of real and/or generated videos."""
        for side, feats in (("real", real), ("fake", fake)):
            if feats is None:
                continue
            if not isinstance(feats, Tensor):
                feats = torch.as_tensor(feats)
            if feats.dim() != 2 or not (feats.is_floating_point() or feats.dtype in (
                    torch.int32, torch.int64)):
                raise ValueError(f"FVD.add_features: {side} should be an (N, D) numeric "
                                 f"tensor, got {tuple(feats.shape)} {feats.dtype}")
            feats = feats.to("cpu", torch.float64)
            if not torch.isfinite(feats).all():
                raise ValueError(f"FVD.add_features: {side} holds NaN or infinite values")
            self._add_features(side, feats)

    def _add_features(self, side: str, feats: Tensor) -> None:
        if self._dim is not None and feats.shape[1] != self._dim:
            raise ValueError(f"FVD: {side} features have {feats.shape[1]} dimensions, the "
                             f"earlier ones {self._dim}")
        self._dim = feats.shape[1]
        (self._real if side == "real" else self._fake).add(feats)

    def all_reduce(self, group=None) -> None:
        """Combines the statistics of every process of ``group`` (torch.distributed) into
        those of the union of their videos; call it on every process before ``compute``."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return
        device = "cuda" if dist.get_backend(group) == "nccl" else "cpu"
        dim = torch.tensor([self._dim or 0], dtype=torch.int64, device=device)
        dist.all_reduce(dim, op=dist.ReduceOp.MAX, group=group)
        d = int(dim.item())
        if d == 0:
            return
        if self._dim not in (None, d):
            raise ValueError(f"FVD.all_reduce: features of {self._dim} dimensions here, "
                             f"{d} on another process")
        for m in (self._real, self._fake):
            mean = m.mean if m.n else torch.zeros(d, dtype=torch.float64)
            scatter = m.scatter if m.n else torch.zeros(d, d, dtype=torch.float64)
            sums = torch.cat([torch.tensor([float(m.n)], dtype=torch.float64), mean * m.n])
            sums = sums.to(device)
            dist.all_reduce(sums, group=group)
            sums = sums.cpu()
            n = round(sums[0].item())
            if n == 0:
                continue
            mean_all = sums[1:] / n
            # each process's scatter about the global mean, summed: the union's scatter
            delta = mean - mean_all
            part = (scatter + torch.outer(delta, delta) * m.n).to(device)
            dist.all_reduce(part, group=group)
            m.n, m.mean, m.scatter = n, mean_all, part.cpu()
        self._dim = d

    def compute(self) -> float:
        """The Fréchet distance between the real and generated videos' feature Gaussians."""
        if self._real.n < 2 or self._fake.n < 2:
            raise ValueError(f"FVD.compute: needs at least 2 real and 2 generated videos "
                             f"(a covariance), got {self._real.n} real and {self._fake.n} "
                             f"generated")
        return frechet_distance(self._real.mean, self._real.covariance(self.unbiased),
                                self._fake.mean, self._fake.covariance(self.unbiased))

    def __repr__(self) -> str:
        return (f"FVD(detector={self.detector_name!r}, size={self.size}, "
                f"value_range={self.value_range}, layout={self.layout!r}, "
                f"real={self._real.n}, fake={self._fake.n})")


def _positive_int_or_none(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int or None, got {value!r}")
    return value


def _size(size):
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (isinstance(size, (tuple, list)) and len(size) == 2 and
            all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
        return tuple(size)
    raise ValueError(f"size: expected a positive int, (H, W) or None, got {size!r}")


def _value_range(value_range):
    ok = (isinstance(value_range, (tuple, list)) and len(value_range) == 2 and
          all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
              for v in value_range) and value_range[0] < value_range[1])
    if not ok:
        raise ValueError(f"value_range: expected (low, high) numbers with low < high, got "
                         f"{value_range!r}")
    return (float(value_range[0]), float(value_range[1]))


__all__ = ["FVD", "I3D_KWARGS", "frechet_distance"]
