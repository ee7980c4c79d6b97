"""fastcells.metrics against independent numpy formulas, skimage's SSIM, hand-made
contingency tables and a straightforward LPIPS written here."""
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from fastcells.metrics import (
    LPIPS,
    MetricTracker,
    contingency,
    csi,
    far,
    hss,
    mae_per_frame,
    mae_per_pixel,
    mse_per_frame,
    mse_per_pixel,
    per_frame,
    pod,
    psnr,
    ssim,
)


def _pair(shape=(2, 3, 1, 16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g, dtype=torch.float64)
    pred = (target + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return pred, target


# ---------------------------------------------------------------- pixel metrics

def test_mse_mae_conventions():
    pred, target = _pair()
    p, t = pred.numpy(), target.numpy()
    d = p - t
    assert mse_per_frame(pred, target).item() == pytest.approx((d ** 2).sum((2, 3, 4)).mean())
    assert mae_per_frame(pred, target).item() == pytest.approx(np.abs(d).sum((2, 3, 4)).mean())
    assert mse_per_pixel(pred, target).item() == pytest.approx((d ** 2).mean())
    assert mae_per_pixel(pred, target).item() == pytest.approx(np.abs(d).mean())
    # the two conventions differ by the elements per frame (C*H*W = 256 here)
    assert mse_per_frame(pred, target).item() == pytest.approx(
        256 * mse_per_pixel(pred, target).item())
    per = mse_per_frame(pred, target, reduction="none")
    assert per.shape == (2, 3)
    assert np.allclose(per.numpy(), (d ** 2).sum((2, 3, 4)))
    # single frames (B, C, H, W)
    assert mse_per_frame(pred[:, 0], target[:, 0], reduction="none").shape == (2,)
    assert mse_per_frame(pred[:, 0], target[:, 0]).item() == pytest.approx(
        (d[:, 0] ** 2).sum((1, 2, 3)).mean())


def test_psnr_per_frame_average():
    pred, target = _pair()
    d = (pred - target).numpy()
    frame_mse = (d ** 2).mean((2, 3, 4))
    assert psnr(pred, target).item() == pytest.approx(np.mean(10 * np.log10(1 / frame_mse)))
    assert psnr(pred * 255, target * 255, data_range=255).item() == pytest.approx(
        psnr(pred, target).item())
    assert psnr(target, target).item() == float("inf")
    with pytest.raises(ValueError, match="data_range"):
        psnr(pred, target, data_range=0)


def test_metric_input_errors():
    pred, target = _pair()
    with pytest.raises(ValueError, match=r"pred \(2, 3, 1, 16, 16\) and target \(2, 3, 1, 16, 8\)"):
        mse_per_frame(pred, target[..., :8])
    with pytest.raises(TypeError, match="floating-point"):
        mse_per_pixel(pred, (target * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\) or \(B, C, H, W\)"):
        ssim(pred[0, 0], target[0, 0])
    with pytest.raises(ValueError, match="reduction"):
        mae_per_pixel(pred, target, reduction="sum")
    with pytest.raises(TypeError, match="pred should be a Tensor"):
        psnr(pred.numpy(), target)


# ---------------------------------------------------------------- SSIM vs skimage

def _structured(seed, channels, size=(40, 48)):
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(channels):
        img = 0.5 + 0.3 * np.sin(2 * np.pi * (rng.uniform(1, 3) * xx + rng.uniform(1, 3) * yy))
        r0, c0 = rng.integers(5, h - 15), rng.integers(5, w - 15)
        img[r0:r0 + 10, c0:c0 + 12] = rng.uniform(0, 1)          # a sharp-edged block
        out.append(img)
    return np.clip(np.stack(out), 0, 1)


def _skimage_ssim(p, t, data_range=1.0, sigma=1.5):
    # p, t: (C, H, W)
    return structural_similarity(p, t, data_range=data_range, gaussian_weights=True,
                                 sigma=sigma, use_sample_covariance=False, channel_axis=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_skimage(channels):
    rng = np.random.default_rng(channels)
    rand_t = rng.random((channels, 32, 36))
    rand_p = np.clip(rand_t + 0.2 * rng.standard_normal(rand_t.shape), 0, 1)
    struct_t = _structured(1, channels)[:, :32, :36]
    struct_p = np.clip(_structured(2, channels)[:, :32, :36] * 0.3 + struct_t * 0.7, 0, 1)
    pairs = [(rand_p, rand_t), (struct_p, struct_t), (struct_t, struct_t)]
    pred = torch.tensor(np.stack([p for p, _ in pairs]))[None]      # (1, T=3, C, H, W)
    target = torch.tensor(np.stack([t for _, t in pairs]))[None]
    expect = [_skimage_ssim(p, t) for p, t in pairs]
    got = ssim(pred, target, reduction="none")[0]
    assert np.allclose(got.numpy(), expect, atol=1e-4, rtol=0)
    assert abs(got[2].item() - 1.0) < 1e-12
    assert ssim(pred, target).item() == pytest.approx(np.mean(expect), abs=1e-4)
    # float32 input, data_range 255, 4-D input, another sigma
    assert abs(ssim((pred[:, 1] * 255).float(), (target[:, 1] * 255).float(),
                    data_range=255.0).item() - expect[1]) < 1e-4
    assert abs(ssim(pred[:, 1], target[:, 1], win_size=9, sigma=1.0).item()
               - _skimage_ssim(struct_p, struct_t, sigma=1.0)) < 1e-4


def test_ssim_window_errors():
    pred, target = _pair(shape=(1, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="smaller than win_size=11"):
        ssim(pred, target)
    with pytest.raises(ValueError, match="odd"):
        ssim(pred, target, win_size=4)


# ---------------------------------------------------------------- skill scores

def test_skill_scores_hand_made():
    target = torch.tensor([1, 1, 0, 0, 1, 0, 0, 0.]).view(1, 1, 1, 2, 4)
    pred = torch.tensor([.9, .2, .7, 0, .6, 0, .1, 0]).view(1, 1, 1, 2, 4)
    table = contingency(pred, target, [0.5, 2.0, 0.0])
    # hits, misses, false alarms, correct negatives
    assert table.tolist() == [[2, 1, 1, 4], [0, 0, 0, 8], [8, 0, 0, 0]]
    assert csi(pred, target, 0.5).item() == pytest.approx(2 / 4)
    assert pod(pred, target, 0.5).item() == pytest.approx(2 / 3)
    assert far(pred, target, 0.5).item() == pytest.approx(1 / 3)
    assert hss(pred, target, 0.5).item() == pytest.approx(2 * (2 * 4 - 1 * 1) / (3 * 5 + 3 * 5))
    # nothing reaches 2.0: every score is 0/0 -> NaN; everything reaches 0: HSS 0/0 -> NaN
    for fn in (csi, pod, far, hss):
        assert torch.isnan(fn(pred, target, [2.0])).all()
    assert csi(pred, target, [0.0]).tolist() == [1.0]
    assert far(pred, target, [0.0]).tolist() == [0.0]
    assert torch.isnan(hss(pred, target, [0.0])).all()
    # a perfect miss: CSI 0, POD 0, FAR 1, HSS negative
    assert csi(1 - target, target, [0.5]).tolist() == [0.0]
    assert far(1 - target, target, [0.5]).tolist() == [1.0]
    assert hss(1 - target, target, [0.5]).item() < 0
    with pytest.raises(ValueError, match="thresholds"):
        csi(pred, target, [])


def test_skill_scores_against_numpy():
    pred, target = _pair(shape=(3, 4, 1, 8, 8), seed=5)
    thr = [0.2, 0.5, 0.8]
    p, t = pred.numpy(), target.numpy()
    for k, th in enumerate(thr):
        a, b = p >= th, t >= th
        h, m, f, n = (a & b).sum(), (~a & b).sum(), (a & ~b).sum(), (~a & ~b).sum()
        assert csi(pred, target, thr)[k].item() == pytest.approx(h / (h + m + f))
        assert hss(pred, target, thr)[k].item() == pytest.approx(
            2 * (h * n - m * f) / ((h + m) * (m + n) + (h + f) * (f + n)))
    per_t = contingency(pred, target, thr, per_frame=True)
    assert per_t.shape == (4, 3, 4) and torch.equal(per_t.sum(0), contingency(pred, target, thr))


# ---------------------------------------------------------------- curves and tracker

def test_per_frame_curve():
    pred, target = _pair()
    curve = per_frame(mse_per_frame, pred, target)
    d = (pred - target).numpy()
    assert curve.shape == (3,)
    assert np.allclose(curve.numpy(), (d ** 2).sum((2, 3, 4)).mean(0))
    assert torch.allclose(per_frame(ssim, pred, target),
                          ssim(pred, target, reduction="none").mean(0))
    assert per_frame(csi, pred, target, thresholds=0.5).shape == (3,)
    with pytest.raises(ValueError, match="one number per frame"):
        per_frame(lambda a, b: a, pred, target)


def test_tracker_over_batches_equals_whole_set(tmp_path):
    pred, target = _pair(shape=(7, 4, 1, 16, 16), seed=3)
    tracker = MetricTracker(thresholds=[0.3, 0.7])
    for lo, hi in ((0, 3), (3, 4), (4, 7)):                         # uneven batches
        tracker.update(pred[lo:hi], target[lo:hi])
    means, curves = tracker.compute(), tracker.curves()
    assert tracker.count == 7
    assert means["mse_per_frame"] == pytest.approx(mse_per_frame(pred, target).item())
    assert means["mae_per_pixel"] == pytest.approx(mae_per_pixel(pred, target).item())
    assert means["psnr"] == pytest.approx(psnr(pred, target).item())
    assert means["ssim"] == pytest.approx(ssim(pred, target).item())
    assert means["csi@0.3"] == pytest.approx(csi(pred, target, 0.3).item())
    assert means["far@0.7"] == pytest.approx(far(pred, target, 0.7).item())
    assert all(isinstance(v, float) for v in means.values())
    assert np.allclose(curves["mse_per_pixel"], per_frame(mse_per_pixel, pred, target).numpy())
    assert np.allclose(curves["psnr"], per_frame(psnr, pred, target).numpy())
    assert np.allclose(curves["hss@0.3"], per_frame(hss, pred, target, thresholds=0.3).numpy())
    assert all(len(c) == 4 and isinstance(c[0], float) for c in curves.values())
    with pytest.raises(ValueError, match="5-frame ones|after 4-frame"):
        tracker.update(pred[:, :3], target[:, :3])

    # all_reduce over a one-process gloo group leaves the results unchanged
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0,
                            world_size=1)
    try:
        tracker.all_reduce()
    finally:
        dist.destroy_process_group()
    assert tracker.compute() == pytest.approx(means, nan_ok=True)
    tracker.reset()
    with pytest.raises(ValueError, match="no batch"):
        tracker.compute()
    with pytest.raises(ValueError, match="unknown"):
        MetricTracker(metrics=["mse"])


# ---------------------------------------------------------------- LPIPS

ALEX = [("0", 3, 64, 11, 4, 2), ("3", 64, 192, 5, 1, 2), ("6", 192, 384, 3, 1, 1),
        ("8", 384, 256, 3, 1, 1), ("10", 256, 256, 3, 1, 1)]
ALEX_SLICE = {"0": 1, "3": 2, "6": 3, "8": 4, "10": 5}


def _random_alex(seed=0):
    g = torch.Generator().manual_seed(seed)
    convs = {i: (torch.randn(o, c, k, k, generator=g) * (2 / (c * k * k)) ** 0.5,
                 torch.randn(o, generator=g) * 0.1) for i, c, o, k, _, _ in ALEX}
    lins = [torch.rand(1, c, 1, 1, generator=g) for c in (64, 192, 384, 256, 256)]
    return convs, lins


def _lpips_by_hand(x, y, convs, lins):
    """Straight from the paper/package: scaling layer, AlexNet features after each ReLU,
    channel-normalised, squared difference, 1x1 weights, spatial mean, sum over layers."""
    shift = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)
    scale = torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)

    def feats(z):
        z = (z - shift) / scale
        out = []
        for n, (i, _, _, _, s, p) in enumerate(ALEX):
            if n in (1, 2):
                z = F.max_pool2d(z, 3, 2)
            z = F.relu(F.conv2d(z, *convs[i], stride=s, padding=p))
            out.append(z)
        return out

    total = 0
    for a, b, w in zip(feats(x), feats(y), lins):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        total = total + ((a - b) ** 2 * w.view(1, -1, 1, 1)).sum(1).mean((1, 2))
    return total


def test_lpips_with_user_weights(tmp_path):
    convs, lins = _random_alex()
    full = {f"net.slice{ALEX_SLICE[i]}.{i}.{n}": v
            for i, (w, b) in convs.items() for n, v in (("weight", w), ("bias", b))}
    full.update({f"lin{k}.model.1.weight": w for k, w in enumerate(lins)})
    full["scaling_layer.shift"] = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)
    torch.save(full, tmp_path / "lpips_alex.pth")
    metric = LPIPS(tmp_path / "lpips_alex.pth", net="alex")

    g = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 2, 3, 64, 64, generator=g)
    target = (pred + 0.2 * torch.rand(2, 2, 3, 64, 64, generator=g)).clamp(0, 1)
    got = metric(pred, target, reduction="none")
    expect = _lpips_by_hand(pred.view(4, 3, 64, 64) * 2 - 1, target.view(4, 3, 64, 64) * 2 - 1,
                            convs, lins).view(2, 2)
    assert got.shape == (2, 2)
    assert torch.allclose(got, expect, rtol=1e-4, atol=1e-6)
    assert metric(target, target).item() == pytest.approx(0.0, abs=1e-8)
    # grayscale frames are repeated to RGB; data_range scales to [-1, 1]
    gray = metric(pred[:, :, :1] * 255, target[:, :, :1] * 255, data_range=255)
    assert gray.item() == pytest.approx(_lpips_by_hand(
        pred[:, :, :1].reshape(4, 1, 64, 64).expand(-1, 3, -1, -1) * 2 - 1,
        target[:, :, :1].reshape(4, 1, 64, 64).expand(-1, 3, -1, -1) * 2 - 1,
        convs, lins).mean().item(), rel=1e-4)

    # the lpips package's lin-only file plus a torchvision backbone checkpoint
    torch.save({f"lin{k}.model.0.weight": w for k, w in enumerate(lins)}, tmp_path / "lin.pth")
    tv = {f"features.{i}.{n}": v for i, (w, b) in convs.items()
          for n, v in (("weight", w), ("bias", b))}
    tv["classifier.1.weight"] = torch.zeros(2, 2)
    torch.save(tv, tmp_path / "alexnet.pth")
    split = LPIPS(tmp_path / "lin.pth", backbone_path=tmp_path / "alexnet.pth")
    assert torch.allclose(split(pred, target, reduction="none"), got)
    assert not any(p.requires_grad for p in split.parameters())


def test_lpips_errors(tmp_path):
    with pytest.raises(ValueError, match="never downloads"):
        LPIPS()
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        LPIPS(tmp_path / "missing.pth")
    _, lins = _random_alex()
    torch.save({f"lin{k}.model.1.weight": w for k, w in enumerate(lins)}, tmp_path / "lin.pth")
    with pytest.raises(ValueError, match="backbone_path"):
        LPIPS(tmp_path / "lin.pth")
    with pytest.raises(ValueError, match="net: expected"):
        LPIPS(tmp_path / "lin.pth", net="squeeze")


def test_lpips_vgg_layout(tmp_path):
    g = torch.Generator().manual_seed(0)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    state, i, c = {}, 0, 3
    bounds = [4, 9, 16, 23, 30]
    for v in cfg:
        if v == "M":
            i += 1
            continue
        s = next(n for n, b in enumerate(bounds, 1) if i < b)
        state[f"net.slice{s}.{i}.weight"] = torch.randn(v, c, 3, 3, generator=g) * (2 / (9 * c)) ** .5
        state[f"net.slice{s}.{i}.bias"] = torch.zeros(v)
        c, i = v, i + 2
    for k, ch in enumerate((64, 128, 256, 512, 512)):
        state[f"lin{k}.model.1.weight"] = torch.rand(1, ch, 1, 1, generator=g)
    torch.save(state, tmp_path / "vgg.pth")
    metric = LPIPS(tmp_path / "vgg.pth", net="vgg")
    x = torch.rand(1, 3, 16, 16, generator=g)
    assert metric(x, x).item() == pytest.approx(0.0, abs=1e-8)
    assert metric(x, x.flip(-1)).item() > 0
    # the same state dict keys as the lpips package's module
    assert set(metric.state_dict()) - {"scaling_layer.shift", "scaling_layer.scale"} == set(state)
