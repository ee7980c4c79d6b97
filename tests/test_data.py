"""fastcells.data: the Moving-MNIST generator and every loader, on small files written here."""
import gzip
import pickle
import struct

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from fastcells.data import (
    Cityscapes,
    MovingMNIST,
    NpySequences,
    PredRNNClips,
    SequenceFolder,
    TaxiBJ,
    build_dataset,
    check_values,
    load_mnist_idx,
    render_digits,
    split,
)

# ---------------------------------------------------------------- generator

def test_moving_mnist_shapes_range_and_determinism():
    ds = MovingMNIST(6, seq_len=10, seed=3)
    x = ds[2]
    assert x.shape == (10, 1, 64, 64) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    assert torch.equal(x, MovingMNIST(6, seq_len=10, seed=3)[2])      # same (seed, index)
    assert not torch.equal(x, ds[3])
    assert not torch.equal(x, MovingMNIST(6, seq_len=10, seed=4)[2])
    assert torch.equal(ds[-1], ds[5])
    with pytest.raises(IndexError):
        ds[6]


def test_moving_mnist_digits_move_and_bounce():
    ds = MovingMNIST(20, seq_len=20, num_digits=1, seed=0)
    bounced = 0
    for i in range(len(ds)):
        x = ds[i][:, 0]
        paths = ds.trajectories(i)[0]                               # (T, 2) top-left
        assert paths.min() >= 0 and paths.max() <= 64 - 28          # digit stays in frame
        mass = x.sum((1, 2))
        assert (mass > 0).all()                                     # never leaves the frame
        ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        com = torch.stack([(x * ys).sum((1, 2)), (x * xs).sum((1, 2))], 1) / mass[:, None]
        assert (com[-1] - com[0]).abs().sum() > 1.0                  # it moved
        # the centre of mass follows the trajectory: constant offset (same glyph)
        offset = com - torch.as_tensor(paths, dtype=torch.float32)
        assert (offset - offset[0]).abs().max() < 1e-4
        v = np.diff(paths, axis=0)
        assert np.abs(v).max() <= 4                                 # 0.1 * 36 px per frame
        flips = (np.sign(v[1:]) * np.sign(v[:-1]) < 0).any(1)
        bounced += int(flips.any())
        # a reversal only happens at a wall
        for t in np.nonzero(flips)[0]:
            assert (paths[t + 1] == 0).any() or (paths[t + 1] == 36).any()
    assert bounced >= 5


def test_moving_mnist_with_supplied_digits_combines_by_max():
    digits = np.full((1, 28, 28), 100, np.uint8)                     # one solid square glyph
    ds = MovingMNIST(40, seq_len=5, num_digits=2, digits=digits)
    overlapping = 0
    for i in range(len(ds)):
        x = ds[i][:, 0]
        expect = torch.zeros(5, 64, 64)
        for top_left in ds.trajectories(i):
            for t, (r, c) in enumerate(top_left):
                expect[t, r:r + 28, c:c + 28] = 100 / 255          # union: max, not sum
        assert torch.allclose(x, expect)
        overlapping += int((np.abs(ds.trajectories(i)[0] - ds.trajectories(i)[1]) < 28)
                           .all(1).any())
    assert overlapping > 0                                           # the case was exercised
    with pytest.raises(ValueError, match=r"digits: expected shape \(N, 28, 28\)"):
        MovingMNIST(2, digits=np.zeros((3, 20, 20), np.uint8))
    with pytest.raises(ValueError, match="image_size"):
        MovingMNIST(2, image_size=28)
    with pytest.raises(ValueError, match="seed: expected an int >= 0"):
        MovingMNIST(2, seed=-1)


def test_procedural_glyphs_vary():
    g = render_digits([3, 3, 8], seed=0)
    assert g.shape == (3, 28, 28) and g.dtype == np.uint8
    assert not np.array_equal(g[0], g[1])                           # jittered renderings
    assert 0.05 < (g > 0).mean() < 0.5


# ---------------------------------------------------------------- files

def _write_idx(path, images, gz):
    raw = struct.pack(">iiii", 0x803, *images.shape) + images.tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_idx(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = tmp_path / ("imgs-idx3-ubyte" + (".gz" if gz else ""))
    _write_idx(path, images, gz)
    assert np.array_equal(load_mnist_idx(path), images)
    ds = build_dataset(f"mnist_idx:{path}", seq_len=4, num_sequences=3)
    x = ds[0]
    assert x.shape == (4, 1, 64, 64)
    # every frame's pixels come from the supplied glyphs
    assert set((x * 255).round().unique().tolist()) <= set(images.ravel().tolist()) | {0}


def test_load_mnist_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_mnist_idx(tmp_path / "missing")
    bad = tmp_path / "labels-idx1-ubyte"
    bad.write_bytes(struct.pack(">ii", 0x801, 3) + bytes(3) + bytes(8))
    with pytest.raises(ValueError, match="not an idx3-ubyte"):
        load_mnist_idx(bad)
    short = tmp_path / "short-idx3-ubyte"
    short.write_bytes(struct.pack(">iiii", 0x803, 2, 28, 28) + bytes(100))
    with pytest.raises(ValueError, match=r"\(2, 28, 28\)"):
        load_mnist_idx(short)


def test_mnist_test_seq_npy(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)  # T, N, H, W
    path = tmp_path / "mnist_test_seq.npy"
    np.save(path, arr)
    ds = build_dataset(f"mnist_test_seq:{path}", seq_len=20)
    assert len(ds) == 3
    x = ds[1]
    assert x.shape == (20, 1, 8, 8) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0], torch.from_numpy(arr[:, 1]).float() / 255)
    assert torch.equal(NpySequences(path)[1], x)                     # auto layout by name
    assert build_dataset(f"mnist_test_seq:{path}", seq_len=10)[1].shape[0] == 10
    with pytest.raises(ValueError, match="fewer than seq_len=30"):
        build_dataset(f"mnist_test_seq:{path}", seq_len=30)


def test_generic_npy_layouts(tmp_path):
    arr = np.random.default_rng(0).random((4, 5, 2, 6, 7)).astype(np.float32)   # N T C H W
    p5 = tmp_path / "seqs.npy"
    np.save(p5, arr)
    ds = build_dataset(f"npy:{p5}", seq_len=None)
    assert len(ds) == 4 and torch.equal(ds[2], torch.from_numpy(arr[2]))
    p4 = tmp_path / "gray.npy"
    np.save(p4, arr[:, :, 0])                                        # N T H W
    assert torch.equal(NpySequences(p4)[3][:, 0], torch.from_numpy(arr[3, :, 0]))
    clone = pickle.loads(pickle.dumps(ds))          # what spawned DataLoader workers get
    assert clone._arr is None and torch.equal(clone[2], ds[2])
    last = tmp_path / "last.npy"
    np.save(last, arr.transpose(0, 1, 3, 4, 2))                      # N T H W C
    assert torch.equal(NpySequences(last, layout="NTHWC")[1], torch.from_numpy(arr[1]))
    with pytest.raises(ValueError, match=r"layout 'NTCHW' expects 5 dimensions"):
        NpySequences(p4, layout="NTCHW")
    with pytest.raises(ValueError, match="layout: expected"):
        NpySequences(p5, layout="XYZ")
    np.save(tmp_path / "flat.npy", np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
        NpySequences(tmp_path / "flat.npy")
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        build_dataset(f"npy:{tmp_path / 'nope.npy'}")
    with pytest.raises(ValueError, match=r"should end with one of \.npy"):
        NpySequences(tmp_path / "seqs.txt")
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="junk.npy"):
        NpySequences(tmp_path / "junk.npy")


def _predrnn_archive(path, n=3, t_in=3, t_out=2, dims=(1, 4, 5), uint8=False):
    frames = np.random.default_rng(1).random((n * (t_in + t_out),) + dims).astype(np.float32)
    if uint8:
        frames = (frames * 255).astype(np.uint8)
    clips = np.zeros((2, n, 2), np.int32)
    for i in range(n):
        s = i * (t_in + t_out)
        clips[0, i] = [s, t_in]
        clips[1, i] = [s + t_in, t_out]
    np.savez(path, clips=clips, dims=np.array([dims], np.int32), input_raw_data=frames)
    return frames


def test_predrnn_clips(tmp_path):
    path = tmp_path / "moving-mnist-train.npz"
    frames = _predrnn_archive(path)
    ds = build_dataset(f"predrnn_npz:{path}", seq_len=None)
    assert len(ds) == 3
    assert torch.equal(ds[1], torch.from_numpy(frames[5:10]))        # 3 inputs + 2 outputs
    assert build_dataset(f"predrnn_npz:{path}", seq_len=4)[2].shape == (4, 1, 4, 5)
    frames8 = _predrnn_archive(tmp_path / "u8.npz", uint8=True)
    assert torch.allclose(PredRNNClips(tmp_path / "u8.npz")[0],
                          torch.from_numpy(frames8[:5]).float() / 255)
    # dims (2, 3): outputs from output_raw_data
    clips = np.array([[[0, 2]], [[0, 3]]], np.int32)
    inp, out = np.zeros((2, 1, 4, 4), np.float32), np.ones((3, 1, 4, 4), np.float32)
    np.savez(tmp_path / "two.npz", clips=clips, dims=np.array([[1, 4, 4], [1, 4, 4]]),
             input_raw_data=inp, output_raw_data=out)
    x = PredRNNClips(tmp_path / "two.npz")[0]
    assert x.shape == (5, 1, 4, 4) and x[:2].sum() == 0 and (x[2:] == 1).all()


def test_predrnn_clips_errors(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, clips=np.zeros((2, 1, 2), np.int32), input_raw_data=np.zeros((4, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"bad\.npz.*missing key\(s\) \['dims'\]"):
        PredRNNClips(path)
    np.savez(path, clips=np.zeros((3, 1, 2), np.int32), dims=np.array([[1, 2, 2]]),
             input_raw_data=np.zeros((4, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"'clips' should have shape \(2, N, 2\)"):
        PredRNNClips(path)
    np.savez(path, clips=np.array([[[0, 2]], [[2, 2]]]), dims=np.array([[1, 3, 3]]),
             input_raw_data=np.zeros((4, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"'input_raw_data' should have shape \(frames, 1, 3, 3\)"):
        PredRNNClips(path)
    np.savez(path, clips=np.array([[[0, 2]], [[3, 2]]]), dims=np.array([[1, 2, 2]]),
             input_raw_data=np.zeros((4, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"clip 0's output frames \[3, 5\)"):
        PredRNNClips(path)
    with pytest.raises(FileNotFoundError):
        PredRNNClips(tmp_path / "none.npz")


def _png(path, arr):
    Image.fromarray(arr).save(path)


def test_sequence_folder_of_pngs(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (2, 4, 6, 5), dtype=np.uint8)          # 2 sequences x 4 frames
    for s in range(2):
        (tmp_path / f"seq{s}").mkdir()
        for t in range(4):
            _png(tmp_path / f"seq{s}" / f"{t:03d}.png", gray[s, t])
    (tmp_path / "README.txt").write_text("ignored")
    (tmp_path / ".ipynb_checkpoints").mkdir()                          # hidden: ignored
    ds = build_dataset(f"folder:{tmp_path}", seq_len=None)
    assert len(ds) == 2
    assert torch.allclose(ds[1], torch.from_numpy(gray[1][:, None]).float() / 255)
    windows = SequenceFolder(tmp_path, seq_len=2, stride=1)
    assert len(windows) == 6 and torch.equal(windows[4], ds[1][1:3])
    with pytest.raises(ValueError, match="fewer than seq_len=5"):
        SequenceFolder(tmp_path, seq_len=5)

    rgb_root = tmp_path / "rgb"
    (rgb_root / "a").mkdir(parents=True)
    rgba = rng.integers(0, 256, (2, 6, 5, 4), dtype=np.uint8)
    for t in range(2):
        _png(rgb_root / "a" / f"{t}.png", rgba[t])
    x = SequenceFolder(rgb_root)[0]
    assert x.shape == (2, 3, 6, 5)
    assert torch.allclose(x, torch.from_numpy(rgba[..., :3]).permute(0, 3, 1, 2).float() / 255)


def test_sequence_folder_of_npy(tmp_path):
    a = np.random.default_rng(0).random((5, 1, 4, 4)).astype(np.float32)
    b = (np.random.default_rng(1).random((6, 4, 4)) * 255).astype(np.uint8)   # (T, H, W)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    with pytest.raises(ValueError, match="pass seq_len"):
        SequenceFolder(tmp_path)
    ds = SequenceFolder(tmp_path, seq_len=5)
    assert torch.equal(ds[0], torch.from_numpy(a))
    assert torch.allclose(ds[1], torch.from_numpy(b[:5, None]).float() / 255)
    np.save(tmp_path / "c.npy", np.zeros((5, 2, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"c\.npy.*\(2, 4, 4\)"):
        SequenceFolder(tmp_path, seq_len=5)


def test_sequence_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SequenceFolder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="holds no sequences"):
        SequenceFolder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no frame images"):
        SequenceFolder(tmp_path)


def _dates(n, gap_at=None):
    out, slot = [], 0
    for i in range(n):
        if i == gap_at:
            slot += 3                                                   # missing slots
        day, s = divmod(slot, 48)
        out.append(f"201307{day + 1:02d}{s + 1:02d}".encode())
        slot += 1
    return np.array(out)


def test_taxibj_h5_and_npz_flows(tmp_path):
    flows = np.random.default_rng(0).random((10, 2, 32, 32)) * 500 + 5   # raw counts
    with h5py.File(tmp_path / "BJ16_M32x32_T30_InOut.h5", "w") as f:
        f["data"] = flows
        f["date"] = _dates(10, gap_at=6)
    ds = build_dataset(f"taxibj:{tmp_path / 'BJ16_M32x32_T30_InOut.h5'}", seq_len=4)
    # windows of 4 consecutive slots; the gap before frame 6 rules out starts 3, 4, 5
    assert [s for _, s in ds.windows] == [0, 1, 2, 6]
    x = ds[3]
    assert x.shape == (4, 2, 32, 32) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    lo, hi = flows.min(), flows.max()
    assert ds.data_min == pytest.approx(lo) and ds.data_max == pytest.approx(hi)
    assert torch.allclose(ds.denormalize(x).double(), torch.from_numpy(flows[6:10]), rtol=1e-5)
    assert len(TaxiBJ(tmp_path / "BJ16_M32x32_T30_InOut.h5", seq_len=4, contiguous=False)) == 7

    np.savez(tmp_path / "flows.npz", data=flows)
    ds = TaxiBJ(tmp_path / "flows.npz", seq_len=3, stride=2, data_range=(0.0, 1000.0))
    assert len(ds) == 4
    assert torch.allclose(ds[1].double(), torch.from_numpy(flows[2:5]) / 1000, atol=1e-6)


def test_taxibj_openstl_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 4, 2, 32, 32)).astype(np.float32)
    y = rng.uniform(-1, 1, (3, 4, 2, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "dataset.npz", X_train=x, Y_train=y, X_test=x[:1], Y_test=y[:1])
    ds = TaxiBJ(tmp_path / "dataset.npz", seq_len=None)
    assert len(ds) == 3
    expect = (np.concatenate([x[2], y[2]]) + 1) / 2
    assert torch.allclose(ds[2], torch.from_numpy(expect), atol=1e-6)
    assert len(TaxiBJ(tmp_path / "dataset.npz", split="test")) == 1
    with pytest.raises(ValueError, match="fewer than seq_len=20"):
        build_dataset(f"taxibj:{tmp_path / 'dataset.npz'}", seq_len=20)


def test_taxibj_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", data=np.zeros((10, 32, 32)))
    with pytest.raises(ValueError, match=r"'data' should have shape \(N, C, H, W\)"):
        TaxiBJ(tmp_path / "bad.npz")
    np.savez(tmp_path / "keys.npz", flows=np.zeros((10, 2, 32, 32)))
    with pytest.raises(ValueError, match="found keys \\['flows'\\]"):
        TaxiBJ(tmp_path / "keys.npz")
    with pytest.raises(ValueError, match=r"should end with one of \.npz, \.h5"):
        TaxiBJ(tmp_path / "flows.csv")
    with pytest.raises(FileNotFoundError):
        TaxiBJ(tmp_path / "missing.h5")


# ---------------------------------------------------------------- Cityscapes

def _cityscapes(root, split, city, seq, frames, size=(6, 12), seed=0):
    """Writes <root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    for each frame number; returns the (T, H, W, 3) uint8 frames written."""
    folder = root / "leftImg8bit_sequence" / split / city
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (len(frames), *size, 3), dtype=np.uint8)
    for f, image in zip(frames, images):
        _png(folder / f"{city}_{seq:06d}_{f:06d}_leftImg8bit.png", image)
    return images


def _cityscapes_tree(root):
    return {
        ("aachen", 0): _cityscapes(root, "train", "aachen", 0, range(0, 30), seed=1),
        # two annotated frames 30 apart: one run of 60 frames, two snippets
        ("bochum", 7): _cityscapes(root, "train", "bochum", 7, range(100, 160), seed=2),
        ("frankfurt", 1): _cityscapes(root, "val", "frankfurt", 1, range(275, 305), seed=3),
    }


def test_cityscapes_snippets_crop_resize_and_splits(tmp_path):
    written = _cityscapes_tree(tmp_path)
    (tmp_path / "leftImg8bit_sequence" / "train" / "aachen" / "README.txt").write_text("-")
    # seed 002's setting: 30-frame snippets at 128x128 (2 given, 28 predicted)
    ds = build_dataset(f"cityscapes:{tmp_path}", seq_len=30)
    assert isinstance(ds, Cityscapes) and len(ds) == 3
    x = ds[0]
    assert x.shape == (30, 3, 128, 128) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    assert [(c, s, len(p)) for c, s, p in ds.snippets] == [
        ("aachen", "000000", 30), ("bochum", "000007", 30), ("bochum", "000007", 30)]
    assert ds.snippets[2][2][0].endswith("bochum_000007_000130_leftImg8bit.png")
    # a centre crop of the 6x12 frames to 6x6 without resizing: columns 3..8 exactly
    crop = Cityscapes(tmp_path, seq_len=30, image_size=6)
    expect = torch.from_numpy(written[("bochum", 7)][30:, :, 3:9]).permute(0, 3, 1, 2) / 255
    assert torch.equal(crop[2], expect)
    # the whole frame at its size; a non-square output size; windows
    whole = Cityscapes(tmp_path, seq_len=4, image_size=None, crop="none", stride=13)
    assert len(whole) == 3 * 3                                      # starts 0, 13, 26
    expect = torch.from_numpy(written[("aachen", 0)][13:17]).permute(0, 3, 1, 2) / 255
    assert torch.equal(whole[1], expect)
    assert Cityscapes(tmp_path, seq_len=2, image_size=(4, 10))[0].shape == (2, 3, 4, 10)
    # resizing keeps a flat frame flat (Pillow's bilinear filter, as torchvision's Resize)
    flat = tmp_path / "flat"
    folder = flat / "leftImg8bit_sequence" / "train" / "ulm"
    folder.mkdir(parents=True)
    for f in range(30):
        _png(folder / f"ulm_000002_{f:06d}_leftImg8bit.png",
             np.full((10, 20, 3), (f * 8, 100, 255 - f), np.uint8))
    y = Cityscapes(flat, image_size=16)[0]
    assert y.shape == (30, 3, 16, 16)
    assert torch.equal(y[:, :, 5, 7] * 255, torch.tensor(
        [[f * 8, 100, 255 - f] for f in range(30)], dtype=torch.float32))
    assert torch.equal(y.amin((2, 3)), y.amax((2, 3)))
    # the split: by keyword, or by the path (how a CLI spec picks it)
    val = Cityscapes(tmp_path, split="val", image_size=8)
    assert [c for c, _, _ in val.snippets] == ["frankfurt"] and val.split == "val"
    spec = f"cityscapes:{tmp_path / 'leftImg8bit_sequence' / 'val'}"
    assert torch.equal(build_dataset(spec, seq_len=30, image_size=8)[0], val[0])
    assert len(Cityscapes(tmp_path / "leftImg8bit_sequence", image_size=8)) == 3
    # each run of consecutive frames as one snippet
    runs = Cityscapes(tmp_path, seq_len=30, snippet_len=None, image_size=8)
    assert [len(p) for _, _, p in runs.snippets] == [30, 60]
    check_values(ds, "cityscapes")                                  # every frame readable


def test_cityscapes_errors(tmp_path):
    _cityscapes_tree(tmp_path)
    train = tmp_path / "leftImg8bit_sequence" / "train"
    with pytest.raises(ValueError, match="fewer than seq_len=31"):
        Cityscapes(tmp_path, seq_len=31)
    with pytest.raises(ValueError, match="split: 'train', but the path"):
        Cityscapes(tmp_path / "leftImg8bit_sequence" / "val", split="train")
    with pytest.raises(FileNotFoundError, match=r"no split 'test'.*\['train', 'val'\]"):
        Cityscapes(tmp_path, split="test")
    with pytest.raises(FileNotFoundError, match="holds no 'leftImg8bit_sequence' folder"):
        Cityscapes(train / "aachen")
    with pytest.raises(ValueError, match="crop"):
        Cityscapes(tmp_path, crop="random")
    with pytest.raises(ValueError, match="image_size"):
        Cityscapes(tmp_path, image_size=0)
    # a frame missing inside a snippet: both pieces named, with the gap
    (train / "aachen" / "aachen_000000_000013_leftImg8bit.png").unlink()
    with pytest.raises(ValueError, match=r"aachen sequence 000000 .*frames 000000-000012 are "
                                         r"13 consecutive frames.*000013 of the sequence are "
                                         r"missing"):
        Cityscapes(tmp_path)
    ok = Cityscapes(tmp_path, seq_len=13, snippet_len=None, image_size=8)
    assert [len(p) for _, _, p in ok.snippets] == [13, 16, 60]
    # a short snippet (the end of the download cut off)
    _cityscapes(tmp_path, "train", "aachen", 0, range(13, 14))
    for f in range(20, 30):
        (train / "aachen" / f"aachen_000000_{f:06d}_leftImg8bit.png").unlink()
    with pytest.raises(ValueError, match=r"frames 000000-000019 are 20 consecutive.*no other "
                                         r"frames"):
        Cityscapes(tmp_path)
    _cityscapes(tmp_path, "train", "aachen", 0, range(20, 30))
    # a stray image name, and a corrupt frame (named when read and by check_values)
    stray = train / "aachen" / "aachen_frame.png"
    _png(stray, np.zeros((6, 12, 3), np.uint8))
    with pytest.raises(ValueError, match="aachen_frame.png.*is not named"):
        Cityscapes(tmp_path)
    stray.unlink()
    bad = train / "bochum" / "bochum_000007_000140_leftImg8bit.png"
    bad.write_bytes(bad.read_bytes()[:60])                          # truncated
    ds = Cityscapes(tmp_path, seq_len=30, image_size=8)
    with pytest.raises(ValueError, match="cannot read frame.*bochum_000007_000140"):
        ds[2]
    with pytest.raises(ValueError, match="cannot read frame.*bochum_000007_000140"):
        check_values(ds, "cityscapes")


# ---------------------------------------------------------------- factory, split

def test_build_dataset_specs_and_split():
    ds = build_dataset("synthetic", seq_len=6, num_sequences=10, image_size=32, num_digits=1)
    assert isinstance(ds, MovingMNIST) and ds[0].shape == (6, 1, 32, 32)
    with pytest.raises(ValueError, match="unknown dataset 'bogus'"):
        build_dataset("bogus:x")
    with pytest.raises(ValueError, match="needs a path"):
        build_dataset("npy")
    train, val = split(ds, 0.3, seed=1)
    assert len(train) == 7 and len(val) == 3
    assert sorted(train.indices + val.indices) == list(range(10))
    again = split(ds, 0.3, seed=1)
    assert again[0].indices == train.indices and again[1].indices == val.indices
    assert split(ds, 0.3, seed=2)[1].indices != val.indices
    assert torch.equal(val[0], ds[val.indices[0]])
    with pytest.raises(ValueError, match="val_fraction"):
        split(ds, 1.0)
