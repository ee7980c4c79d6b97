"""fastcells.metrics.FVD: the Fréchet distance against closed forms and scipy, a scripted
detector loaded from a file, the input conventions against a re-creation of the public
evaluation code (tests/public/fvd_reference.py), accumulation over uneven batches, DDP
combination, and the eval CLI."""
import json
import math
import threading

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from fastcells import models
from fastcells.cli import main as cli
from fastcells.data import MovingMNIST
from fastcells.metrics import FVD, frechet_distance
from fastcells.train import TrainConfig, evaluate_model

from .public import fvd_reference as ref


class TinyVideoNet(nn.Module):
    """A stand-in for StyleGAN-V's I3D TorchScript: input (B, 3, T, H, W), the same keyword
    arguments (rescale from [0, 255], resize, return_features before a classifier head)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv3d(3, 3, 3, stride=2, padding=1)
        self.head = nn.Linear(6, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x, rescale: bool = False, resize: bool = False,
                return_features: bool = False):
        if rescale:
            x = x / 127.5 - 1
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 16, 16), mode="trilinear",
                              align_corners=False)
        f = torch.tanh(self.conv(x))
        feats = torch.cat([f.mean((2, 3, 4)), f.square().mean((2, 3, 4))], 1)    # (B, 6)
        if return_features:
            return feats
        return self.head(feats)


@pytest.fixture
def detector_file(tmp_path):
    path = tmp_path / "tiny_i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(TinyVideoNet()), str(path))
    return path


def _videos(n, t=4, c=3, h=12, w=20, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, t, c, h, w, generator=g, dtype=torch.float64)
    return (x * (1 - shift) + shift * x.mean((3, 4), keepdim=True)).float()


def _random_spd(d, seed, rank=None):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, rank or d, generator=g, dtype=torch.float64)
    return a @ a.T + (0 if rank else 0.1 * torch.eye(d, dtype=torch.float64))


# ---------------------------------------------------------------- the distance

def test_frechet_distance_closed_forms():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(
        5, generator=g, dtype=torch.float64)
    a = torch.tensor([0.5, 2.0, 0.0, 1.5, 3.0], dtype=torch.float64)   # one zero variance
    b = torch.tensor([1.0, 0.25, 0.7, 1.5, 0.0], dtype=torch.float64)
    expect = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(
        float(expect), rel=1e-12)
    # commuting but not diagonal: the same eigenbasis
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    s1, s2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(float(expect), rel=1e-10)
    # general covariances against scipy's sqrtm; float32 and numpy inputs accepted
    s1, s2 = _random_spd(6, 1), _random_spd(6, 2)
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.zeros(6)
    root = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expect = float(((mu1 - mu2) ** 2).sum() + (s1 + s2).trace() - 2 * np.trace(root))
    assert frechet_distance(mu1, s1, mu2.numpy(), s2.float()) == pytest.approx(expect, rel=1e-6)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expect, rel=1e-10)
    # identical Gaussians, also rank-deficient ones (tiny negative eigenvalues clamp to 0)
    low = _random_spd(8, 3, rank=3)
    assert frechet_distance(mu1[:1].repeat(8), low, mu1[:1].repeat(8), low) == pytest.approx(
        0.0, abs=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"sigma2 should be \(6, 6\)"):
        frechet_distance(mu1, s1, mu2, s2[:5])
    with pytest.raises(ValueError, match="means should be"):
        frechet_distance(mu1, s1, mu2[:5], s2)


def test_gaussian_features_accumulated_in_uneven_chunks():
    """Features drawn from known Gaussians: the accumulated statistics equal numpy's on the
    whole set, and the distance tends to the population closed form."""
    rng = np.random.default_rng(0)
    mu_r, mu_f = np.array([0.0, 1.0, -1.0]), np.array([0.5, 1.0, 0.0])
    s_r, s_f = _random_spd(3, 4).numpy(), _random_spd(3, 5).numpy()
    real = rng.multivariate_normal(mu_r, s_r, 6001) + 100.0     # a large offset: stable sums
    fake = rng.multivariate_normal(mu_f, s_f, 4000) + 100.0
    metric = FVD(lambda x: x, detector_kwargs={})
    for lo, hi in ((0, 1000), (1000, 1001), (1001, 4700), (4700, 6001)):
        metric.add_features(real=torch.from_numpy(real[lo:hi]))
    for lo, hi in ((0, 2999), (2999, 4000)):
        metric.add_features(fake=torch.from_numpy(fake[lo:hi]))
    assert (metric.count_real, metric.count_fake) == (6001, 4000)
    state = metric.state_dict()
    np.testing.assert_allclose(state["real"]["mean"].numpy(), real.mean(0), rtol=1e-13)
    np.testing.assert_allclose(state["real"]["scatter"].numpy() / 6000,
                               np.cov(real, rowvar=False), rtol=1e-10)
    sample = ref.frechet_distance(fake, real)
    assert metric.compute() == pytest.approx(sample, rel=1e-8)
    population = float(((mu_r - mu_f) ** 2).sum() + np.trace(s_r + s_f)
                       - 2 * np.trace(scipy.linalg.sqrtm(s_r @ s_f).real))
    assert metric.compute() == pytest.approx(population, rel=0.05)
    # StyleGAN-V's statistics divide by N
    pop = FVD(lambda x: x, detector_kwargs={}, unbiased=False)
    pop.add_features(real=torch.from_numpy(real), fake=torch.from_numpy(fake))
    (m_r, c_r), (m_f, c_f) = ref.stylegan_v_mean_cov(real), ref.stylegan_v_mean_cov(fake)
    assert pop.compute() == pytest.approx(frechet_distance(m_r, c_r, m_f, c_f), rel=1e-8)


# ---------------------------------------------------------------- videos through a detector

def test_scripted_detector_file_matches_the_reference_evaluation(detector_file):
    """A TorchScript file loaded by path, the default conventions (shorter side to `size`,
    centre crop, [-1, 1], BCTHW, the I3D keyword arguments), batches of any size: the
    distance of the public evaluation code on all videos at once."""
    real, fake = _videos(11, seed=1), _videos(9, seed=2, shift=0.3)
    metric = FVD(detector_file, size=16)
    for lo, hi in ((0, 4), (4, 5), (5, 11)):                        # 11 = 4 + 1 + 6
        metric.update_real(real[lo:hi])
    metric.update_fake(fake[:7])
    metric.update_fake(fake[7:])                                    # the remainder batch
    assert (metric.count_real, metric.count_fake) == (11, 9)
    detector = torch.jit.load(str(detector_file))
    to_bcthw = (lambda v: v.permute(0, 2, 1, 3, 4))
    expect = ref.frechet_distance(ref.get_feats(to_bcthw(fake), detector, 16),
                                  ref.get_feats(to_bcthw(real), detector, 16))
    assert metric.compute() == pytest.approx(expect, rel=1e-5)
    assert metric.compute() > 0.01
    # the same videos on both sides: 0
    same = FVD(detector_file, size=16)
    same.update(real, real)
    assert same.compute() == pytest.approx(0.0, abs=1e-10)


def test_uneven_batches_equal_one_batch(detector_file):
    real, fake = _videos(7, seed=3), _videos(6, seed=4, shift=0.5)
    whole = FVD(detector_file, size=8, batch_size=3)              # 3 detector calls inside
    whole.update(real, fake)
    parts = FVD(detector_file, size=8)
    parts.update(real[:3], fake[:5])
    parts.update(real[3:4], fake[5:])
    parts.update_real(real[4:])
    a, b = whole.state_dict(), parts.state_dict()
    for side in ("real", "fake"):
        assert a[side]["n"] == b[side]["n"]
        torch.testing.assert_close(a[side]["mean"], b[side]["mean"], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(a[side]["scatter"], b[side]["scatter"], rtol=1e-5,
                                   atol=1e-9)
    assert parts.compute() == pytest.approx(whole.compute(), rel=1e-5)
    # the statistics survive a state_dict round trip (torch.save too)
    again = FVD(detector_file, size=8)
    again.load_state_dict(b)
    assert again.compute() == parts.compute()
    # reset(fake_only=True) keeps the real side: a second model scored against it
    parts.reset(fake_only=True)
    assert (parts.count_real, parts.count_fake) == (7, 0)
    parts.update_fake(real)
    assert parts.compute() == pytest.approx(0.0, abs=1e-10)
    parts.reset()
    assert (parts.count_real, parts.count_fake) == (0, 0)
    with pytest.raises(ValueError, match="at least 2 real and 2 generated videos.*got 0 real"):
        parts.compute()
    parts.update(real[:1], fake[:3])
    with pytest.raises(ValueError, match="got 1 real and 3 generated"):
        parts.compute()


class _Recorder(nn.Module):
    """Records what the detector receives; features: the per-video mean and mean square."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, **kwargs):
        self.calls.append((x.clone(), kwargs))
        flat = x.flatten(1)
        return torch.stack([flat.mean(1), flat.square().mean(1)], 1)


@pytest.mark.parametrize("shape", [(2, 3, 3, 10, 17), (2, 3, 1, 19, 8), (1, 2, 3, 9, 9)])
def test_default_input_convention_is_the_reference_preprocessing(shape):
    """Shorter side scaled to the size (other side rounded up), centre crop, [-1, 1],
    grayscale repeated to RGB, (B, C, T, H, W): the reference's preprocess_single."""
    videos = _videos(*shape[:1], t=shape[1], c=shape[2], h=shape[3], w=shape[4], seed=5)
    rec = _Recorder()
    metric = FVD(rec, size=24)
    metric.update_real(videos)
    x, kwargs = rec.calls[0]
    assert kwargs == {"rescale": False, "resize": False, "return_features": True}
    rgb = videos.expand(-1, -1, 3, -1, -1) if shape[2] == 1 else videos
    expect = torch.stack([ref.preprocess_single(v.permute(1, 0, 2, 3), 24) for v in rgb])
    assert x.shape == (shape[0], 3, shape[1], 24, 24) and x.dtype == torch.float32
    torch.testing.assert_close(x, expect, rtol=0, atol=1e-6)
    # non-contiguous and channels-last-like strides read the same values
    strided = videos.transpose(3, 4).contiguous().transpose(3, 4)
    assert not strided.is_contiguous()
    metric.update_fake(strided)
    assert torch.equal(rec.calls[1][0], x)


def test_configurable_input_conventions():
    videos = _videos(5, t=6, c=1, h=8, w=10, seed=6)
    # StyleGAN-V's convention: values in [0, 255] at the stored size, the detector resizes
    rec = _Recorder()
    kwargs = {"rescale": True, "resize": True, "return_features": True}
    metric = FVD(rec, size=None, value_range=(0, 255), detector_kwargs=kwargs, data_range=255)
    metric.update_real(videos * 255)
    x, got = rec.calls[0]
    assert got == kwargs
    torch.testing.assert_close(x, (videos * 255).expand(-1, -1, 3, -1, -1).permute(0, 2, 1, 3, 4))
    # layout, channel count, frames cut to num_frames, stretch resize, batches of 2
    rec = _Recorder()
    metric = FVD(rec, num_frames=4, size=(6, 12), resize="stretch", layout="BTCHW", channels=1,
                 detector_kwargs={}, batch_size=2, dtype=torch.float64)
    feats = metric.features(videos)
    assert [c[0].shape for c in rec.calls] == [(2, 4, 1, 6, 12)] * 2 + [(1, 4, 1, 6, 12)]
    x = torch.cat([c[0] for c in rec.calls])
    expect = F.interpolate(videos[:, :4].double().flatten(0, 1), size=(6, 12), mode="bilinear",
                           align_corners=False).view(5, 4, 1, 6, 12) * 2 - 1
    torch.testing.assert_close(x, expect)
    assert feats.shape == (5, 2) and feats.dtype == torch.float64
    torch.testing.assert_close(feats[:, 0], expect.flatten(1).mean(1))
    # longer videos are cut to num_frames: they mix with ones of exactly num_frames
    metric.update_real(videos)
    metric.update_fake(videos[:, :4])
    assert metric.compute() == pytest.approx(0.0, abs=1e-12)


def test_fvd_input_errors(tmp_path, detector_file):
    with pytest.raises(ValueError, match="never downloads"):
        FVD()
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        FVD(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        FVD(tmp_path / "state.pt")
    with pytest.raises(TypeError, match="detector: expected"):
        FVD(3)
    with pytest.raises(TypeError, match=r"takes no argument\(s\) \['rescale'"):
        FVD(lambda x: x.flatten(1))
    torch.jit.save(torch.jit.script(_Plain()), str(tmp_path / "plain.pt"))
    with pytest.raises(TypeError, match="pass detector_kwargs=\\{\\}"):
        FVD(tmp_path / "plain.pt")
    FVD(tmp_path / "plain.pt", detector_kwargs={})                 # fine without them
    for bad, match in (({"size": 0}, "size"), ({"resize": "crop"}, "resize"),
                       ({"value_range": (1, -1)}, "value_range"), ({"layout": "BHWC"}, "layout"),
                       ({"num_frames": 0}, "num_frames"), ({"data_range": -1}, "data_range"),
                       ({"channels": 0}, "channels"), ({"batch_size": 0}, "batch_size")):
        with pytest.raises(ValueError, match=match):
            FVD(detector_file, **bad)
    metric = FVD(detector_file, size=8, num_frames=3)
    videos = _videos(2, t=4, h=8, w=8)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\), got \(4, 3, 8, 8\)"):
        metric.update_real(videos[0])
    with pytest.raises(TypeError, match="floating-point"):
        metric.update_real((videos * 255).to(torch.uint8))
    with pytest.raises(TypeError, match="should be a Tensor"):
        metric.update_real(videos.numpy())
    with pytest.raises(ValueError, match=r"values in \[-0\.99\d*, 0\.99\d*\]; expected \[0, "):
        metric.update_real(videos * 2 - 1)
    with pytest.raises(ValueError, match="NaN"):
        metric.update_real(videos.masked_fill(videos > 0.9, float("nan")))
    with pytest.raises(ValueError, match="2 frames, fewer than num_frames=3"):
        metric.update_real(videos[:, :2])
    with pytest.raises(ValueError, match="2 channels"):
        metric.update_real(videos[:, :, :2])
    with pytest.raises(ValueError, match="should not be empty"):
        metric.update_real(videos[:0])
    assert metric.count_real == 0                                  # nothing half-added
    free = FVD(detector_file, size=8)
    free.update_real(videos)
    with pytest.raises(ValueError, match="videos of 3 frames after 4-frame ones"):
        free.update_fake(videos[:, :3])
    with pytest.raises(ValueError, match="fake features have 2 dimensions, the earlier ones 6"):
        free.add_features(fake=torch.zeros(3, 2))
    wrong = FVD(lambda x: x.flatten(1)[:1], detector_kwargs={}, size=None)
    with pytest.raises(ValueError, match=r"returned shape \(1, 768\) for 2 videos"):
        wrong.update_real(videos)
    failing = FVD(lambda x: x.view(5, -1), detector_kwargs={})
    with pytest.raises(RuntimeError, match=r"failed on input \(2, 3, 4, 224, 224\)"):
        failing.update_real(videos)


class _Plain(nn.Module):
    def forward(self, x):
        return x.flatten(2).mean(2)


# ---------------------------------------------------------------- distributed evaluation

def test_all_reduce_gives_the_union_of_the_processes_videos(monkeypatch):
    """Two ranks (threads, a stand-in all_reduce) with uneven shares, one without generated
    videos: each ends with the statistics of all the videos."""
    g = torch.Generator().manual_seed(7)
    real = torch.randn(9, 3, generator=g, dtype=torch.float64) * 3 + 1
    fake = torch.randn(5, 3, generator=g, dtype=torch.float64)
    shares = {0: (real[:2], fake), 1: (real[2:], None)}
    box, barrier = {}, threading.Barrier(2)

    def all_reduce(tensor, op=dist.ReduceOp.SUM, group=None):
        rank = int(threading.current_thread().name)
        box[rank] = tensor.clone()
        barrier.wait()
        both = torch.stack([box[0], box[1]])
        result = both.amax(0) if op == dist.ReduceOp.MAX else both.sum(0)
        barrier.wait()
        tensor.copy_(result)

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    results, errors = {}, []

    def rank_main(rank):
        try:
            metric = FVD(lambda x: x, detector_kwargs={})
            r, f = shares[rank]
            metric.add_features(real=r, fake=f)
            metric.all_reduce()
            results[rank] = metric.compute()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=rank_main, args=(r,), name=str(r)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    whole = FVD(lambda x: x, detector_kwargs={})
    whole.add_features(real=real, fake=fake)
    assert results[0] == pytest.approx(whole.compute(), rel=1e-12)
    assert results[1] == pytest.approx(whole.compute(), rel=1e-12)


# ---------------------------------------------------------------- evaluation and the CLI

def test_evaluate_model_scores_whole_clips_with_fvd(detector_file):
    torch.manual_seed(0)
    model = models.create("convlstm", preset="mmnist", hidden_size=4, num_layers=1,
                          frame_size=None, backend="reference")
    data = MovingMNIST(5, seq_len=6, image_size=16, num_digits=1, digit_size=8)
    metric = FVD(detector_file, size=16)
    result = evaluate_model(model, data, 3, 3, batch_size=2, device="cpu", fvd=metric)
    assert metric.count_real == 5 and metric.count_fake == 5       # the remainder batch too
    by_hand = FVD(detector_file, size=16)
    frames = torch.stack([data[i] for i in range(5)])
    with torch.no_grad():
        pred = model(frames[:, :3], pred_len=3).clamp(0, 1)
    by_hand.update(frames, torch.cat([frames[:, :3], pred], 1))
    assert result["fvd"] == pytest.approx(by_hand.compute(), rel=1e-5)
    future = evaluate_model(model, data, 3, 3, batch_size=5, device="cpu", fvd=metric,
                            fvd_videos="pred")
    by_hand.reset()
    by_hand.update(frames[:, 3:], pred)
    assert future["fvd"] == pytest.approx(by_hand.compute(), rel=1e-5)
    with pytest.raises(ValueError, match="fvd_videos"):
        evaluate_model(model, data, 3, 3, batch_size=5, device="cpu", fvd=metric,
                       fvd_videos="all")


def test_cli_eval_with_an_fvd_detector(tmp_path, detector_file, capsys):
    cfg = TrainConfig(model="convlstm", preset="mmnist",
                      model_args={"hidden_size": 4, "num_layers": 1, "frame_size": 32},
                      input_len=2, pred_len=2, num_sequences=30, out_dir=str(tmp_path / "run"))
    model = models.create(cfg.model, preset=cfg.preset, **cfg.model_args)
    ckpt = str(tmp_path / "last.pt")        # what eval reads of a training checkpoint
    torch.save({"config": cfg.to_dict(), "model": model.state_dict()}, ckpt)
    assert cli(["eval", "--checkpoint", ckpt, "--batch-size", "2", "--fvd-detector",
                str(detector_file), "--fvd-videos", "pred", "--out", str(tmp_path / "eval")]) == 0
    result = json.load(open(tmp_path / "eval" / "eval.json"))
    assert math.isfinite(result["fvd"]) and result["fvd"] > 0
    assert '"fvd"' in capsys.readouterr().out
    assert cli(["eval", "--checkpoint", ckpt, "--fvd-detector", str(tmp_path / "no.pt"),
                "--out", str(tmp_path / "eval")]) == 2
    assert "no.pt" in capsys.readouterr().err
