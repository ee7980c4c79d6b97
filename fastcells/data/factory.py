"""``build_dataset`` (a dataset from a CLI spec string) and a deterministic ``split``."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

from .arrays import NpySequences, PredRNNClips
from .cityscapes import Cityscapes
from .folder import SequenceFolder
from .moving_mnist import MovingMNIST, load_mnist_idx
from .taxibj import TaxiBJ

SPECS = {
    "synthetic": "Moving MNIST generated on the fly from procedural digit glyphs (default)",
    "mnist_idx:<path>": "Moving MNIST generated on the fly from real MNIST digits "
                        "(train-images-idx3-ubyte[.gz])",
    "mnist_test_seq:<path>": "the standard mnist_test_seq.npy, (20, N, 64, 64) uint8",
    "npy:<path>": "a .npy array (N, T, C, H, W), or 4-D (N, T, H, W)",
    "predrnn_npz:<path>": "a predrnn-pytorch clip archive (clips, dims, input_raw_data)",
    "folder:<path>": "a folder of sequences: sub-folders of frame images or .npy files",
    "taxibj:<path>": "TaxiBJ flows (.h5 with h5py, or .npz), min-max scaled to [0, 1]",
    "cityscapes:<path>": "Cityscapes leftImg8bit_sequence 30-frame snippets, RGB, centre-"
                         "cropped and resized (128x128 unless image_size=); <path> is the "
                         "root, or .../leftImg8bit_sequence/<split> to pick the split",
}


def build_dataset(spec: str = "synthetic", seq_len: int | None = 20, *,
                  num_sequences: int = 10000, image_size: int | None = None,
                  num_digits: int = 2, seed: int = 0, **kwargs) -> Dataset:
    """A dataset of float32 sequences (T, C, H, W) from a spec string (keys of ``SPECS``).

    ``seq_len`` is the frames per item (file loaders: the first ``seq_len`` of each
    sequence, or all when None; TaxiBJ flows: windows). ``num_sequences``, ``image_size``
    (default 64), ``num_digits`` and ``seed`` configure the generators (``synthetic``,
    ``mnist_idx``); ``image_size`` is also the frame size of ``cityscapes`` (default 128).
    Other keyword arguments go to the loader's constructor (e.g. ``split="test"`` for
    TaxiBJ and Cityscapes, ``layout=`` for ``npy``).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"spec: expected one of {', '.join(SPECS)}, got {spec!r}")
    kind, _, path = spec.partition(":")
    if kind in ("synthetic", "mnist_idx"):
        if kind == "synthetic" and path:
            raise ValueError(f"spec: 'synthetic' takes no path, got {spec!r}")
        if seq_len is None:
            raise ValueError("seq_len: the generators need a sequence length")
        digits = None
        if kind == "mnist_idx":
            if not path:
                raise ValueError("spec: 'mnist_idx:<path>' needs the idx3-ubyte file's path")
            digits = load_mnist_idx(path)
            kwargs.setdefault("digit_size", digits.shape[1])
        return MovingMNIST(num_sequences, seq_len=seq_len,
                           image_size=64 if image_size is None else image_size,
                           num_digits=num_digits, seed=seed, digits=digits, **kwargs)
    loaders = {
        "mnist_test_seq": lambda: NpySequences(path, layout="TNHW", seq_len=seq_len, **kwargs),
        "npy": lambda: NpySequences(path, seq_len=seq_len, **kwargs),
        "predrnn_npz": lambda: PredRNNClips(path, seq_len=seq_len, **kwargs),
        "folder": lambda: SequenceFolder(path, seq_len=seq_len, **kwargs),
        "taxibj": lambda: TaxiBJ(path, seq_len=seq_len, **kwargs),
        "cityscapes": lambda: Cityscapes(
            path, seq_len=seq_len, image_size=128 if image_size is None else image_size,
            **kwargs),
    }
    if kind not in loaders:
        raise ValueError(f"spec: unknown dataset {kind!r}; expected one of "
                         f"{', '.join(SPECS)}")
    if not path:
        raise ValueError(f"spec: {kind!r} needs a path: '{kind}:<path>'")
    return loaders[kind]()


def split(dataset: Dataset, val_fraction: float = 0.1, seed: int = 0) -> tuple[Subset, Subset]:
    """(train, val) subsets of ``dataset``: a random permutation from ``seed`` (the same on
    every run and process), the first ``round(len * val_fraction)`` indices (at least one
    when ``val_fraction > 0``) for validation, the rest for training."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a float in [0, 1), got {val_fraction!r}")
    n = len(dataset)
    n_val = round(n * val_fraction)
    if val_fraction > 0:
        n_val = max(n_val, 1)
    if n - n_val < 1:
        raise ValueError(f"split: {n} sequence(s) leave none for training with "
                         f"val_fraction={val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    return Subset(dataset, sorted(perm[n_val:])), Subset(dataset, sorted(perm[:n_val]))
