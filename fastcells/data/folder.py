"""A folder of sequences: one sub-folder of frame images per sequence, or ``.npy`` files."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import check_seq_len, to_tensor, unit_scale

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def read_image(path: str) -> np.ndarray:
    """One frame as a float32 (C, H, W) array in [0, 1]: grayscale -> C=1, RGB(A) -> C=3
    (alpha dropped). Uses Pillow when installed, else matplotlib (PNG only)."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        try:
            with Image.open(path) as img:
                if img.mode in ("RGBA", "LA", "P", "CMYK", "YCbCr", "HSV", "LAB"):
                    img = img.convert("RGB" if img.mode != "LA" else "L")
                arr = np.asarray(img)
        except OSError as e:
            raise ValueError(f"SequenceFolder: cannot read image {path!r}: {e}") from None
        # Pillow opens 16-bit PNGs in mode "I" (int32 holding 0..65535)
        dtype = np.dtype(np.uint16) if arr.dtype == np.int32 else arr.dtype
        arr = arr.astype(np.float32) * unit_scale(dtype, None, path)
    else:
        if not path.lower().endswith(".png"):
            raise ImportError(f"SequenceFolder: reading {path!r} needs Pillow "
                              f"(pip install pillow); without it only PNG is supported")
        import matplotlib.image as mpimg
        arr = np.asarray(mpimg.imread(path), dtype=np.float32)  # PNG: floats in [0, 1]
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return np.ascontiguousarray(arr[..., :3].transpose(2, 0, 1))
    raise ValueError(f"SequenceFolder: image {path!r} has shape {arr.shape}; expected "
                     f"grayscale (H, W) or RGB(A) (H, W, 3|4)")


class SequenceFolder(Dataset):
    """Sequences from a folder ``root`` whose entries, sorted by name, are either

    * sub-folders, one per sequence, holding its frames as images (PNG, or JPEG/BMP with
      Pillow), ordered by file name (zero-pad the frame numbers: ``000.png``, ``001.png``...);
      grayscale frames give C=1, RGB(A) frames C=3 (alpha dropped); or
    * ``.npy`` files, one per sequence, (T, C, H, W) or (T, H, W) (then C=1); uint8 is
      divided by 255, floats are taken as in [0, 1].

    Item i is a float32 tensor (T, C, H, W). All sequences must share (C, H, W).

    Args:
        root: the folder.
        seq_len: frames per item; None: all (every sequence must then have the same length).
        stride: None: one item per sequence (its first ``seq_len`` frames); an int: every
            window of ``seq_len`` frames starting at multiples of ``stride``.
    """

    def __init__(self, root, seq_len: int | None = None, stride: int | None = None):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"SequenceFolder: no such folder {root!r}")
        if stride is not None and (not isinstance(stride, int) or stride < 1):
            raise ValueError(f"stride: expected a positive int or None, got {stride!r}")
        if stride is not None and seq_len is None:
            raise ValueError("stride: windows need seq_len")
        self.root = root
        self.sequences = []          # (kind, path or list of frame paths, length)
        frame_shape = None
        for name in sorted(os.listdir(root)):
            if name.startswith("."):
                continue     # .ipynb_checkpoints, .DS_Store and the like
            full = os.path.join(root, name)
            if os.path.isdir(full):
                frames = sorted(f for f in os.listdir(full) if not f.startswith(".")
                                and f.lower().endswith(IMAGE_EXTENSIONS))
                if not frames:
                    raise ValueError(f"SequenceFolder: sub-folder {full!r} holds no frame "
                                     f"images ({', '.join(IMAGE_EXTENSIONS)})")
                paths = [os.path.join(full, f) for f in frames]
                shape = read_image(paths[0]).shape
                self.sequences.append(("images", paths, len(paths)))
            elif name.lower().endswith(".npy"):
                try:
                    arr = np.load(full, mmap_mode="r", allow_pickle=False)
                except ValueError as e:
                    raise ValueError(f"SequenceFolder: cannot read {full!r}: {e}") from None
                if arr.ndim not in (3, 4) or 0 in arr.shape:
                    raise ValueError(f"SequenceFolder: {full!r} has shape {arr.shape}; "
                                     f"expected (T, C, H, W) or (T, H, W)")
                unit_scale(arr.dtype, None, full)   # rejects dtypes without a scale
                shape = (1,) + arr.shape[1:] if arr.ndim == 3 else arr.shape[1:]
                self.sequences.append(("npy", full, arr.shape[0]))
            else:
                continue     # README files and the like
            if frame_shape is None:
                frame_shape = tuple(shape)
            elif tuple(shape) != frame_shape:
                raise ValueError(f"SequenceFolder: {full!r} has frames of shape (C, H, W) = "
                                 f"{tuple(shape)}, the first sequence {frame_shape}; all "
                                 f"sequences must share one frame shape")
        if not self.sequences:
            raise ValueError(f"SequenceFolder: {root!r} holds no sequences (sub-folders of "
                             f"frame images or .npy files of shape (T, C, H, W) / (T, H, W))")
        self.frame_shape = frame_shape
        lengths = [n for _, _, n in self.sequences]
        if seq_len is None and len(set(lengths)) > 1:
            raise ValueError(f"SequenceFolder: {root!r} has sequences of {min(lengths)} to "
                             f"{max(lengths)} frames; pass seq_len to use equal-length clips")
        shortest = int(np.argmin(lengths))
        self.seq_len = check_seq_len(seq_len, lengths[shortest],
                                     f"SequenceFolder: {self._name(shortest)!r}")
        # (sequence index, first frame) of every item
        self.items = [(i, start) for i, n in enumerate(lengths)
                      for start in (range(0, n - self.seq_len + 1, stride) if stride else [0])]

    def _name(self, i: int) -> str:
        kind, where, _ = self.sequences[i]
        return os.path.dirname(where[0]) if kind == "images" else where

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        seq, start = self.items[index]
        kind, where, _ = self.sequences[seq]
        stop = start + self.seq_len
        if kind == "npy":
            arr = np.load(where, mmap_mode="r", allow_pickle=False)[start:stop]
            if arr.ndim == 3:
                arr = arr[:, None]
            return to_tensor(arr, unit_scale(arr.dtype, None, where))
        frames = [read_image(p) for p in where[start:stop]]
        for p, f in zip(where[start:stop], frames):
            if f.shape != self.frame_shape:
                raise ValueError(f"SequenceFolder: frame {p!r} has shape (C, H, W) = "
                                 f"{f.shape}, expected {self.frame_shape}")
        return torch.from_numpy(np.stack(frames))

    def __repr__(self) -> str:
        return (f"SequenceFolder({self.root!r}, sequences={len(self.sequences)}, "
                f"items={len(self)}, seq_len={self.seq_len}, frame={self.frame_shape})")
