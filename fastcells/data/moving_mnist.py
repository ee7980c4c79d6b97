"""Moving MNIST: the synthetic generator (no download) and the MNIST idx file reader.

The dynamics are those of the standard generator (Srivastava et al., 2015, and the
``MovingMNIST`` generator most video-prediction code copies): each digit starts at a
uniformly random position, moves in a uniformly random direction at a constant speed of
``step_length`` (a fraction of the free canvas per frame: 0.1 -> 3.6 px/frame on 64x64 with
28x28 digits), and reflects off the canvas edges; the digits are combined by a pixel-wise
maximum.
"""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import torch
from torch.utils.data import Dataset

from .glyphs import render_digit


def load_mnist_idx(path) -> np.ndarray:
    """Reads an MNIST image file in idx3-ubyte format (``train-images-idx3-ubyte``, optionally
    gzipped ``.gz``) and returns the images as an (N, rows, cols) uint8 array (28x28 for MNIST).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_mnist_idx: no such file {path!r}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:  # e.g. a plain file named .gz
        raise ValueError(f"load_mnist_idx: cannot read {path!r}: {e}") from None
    if len(raw) < 16:
        raise ValueError(f"load_mnist_idx: {path!r} is too short for an idx3-ubyte header "
                         f"(16 bytes), got {len(raw)} bytes")
    magic, n, rows, cols = struct.unpack(">iiii", raw[:16])
    # magic 0x00000803: unsigned bytes (0x08), 3 dimensions (0x03)
    if magic != 0x803:
        raise ValueError(f"load_mnist_idx: {path!r} is not an idx3-ubyte image file "
                         f"(magic {magic:#010x}, expected 0x00000803; label files are idx1)")
    expected = n * rows * cols
    if len(raw) - 16 != expected:
        raise ValueError(f"load_mnist_idx: {path!r} header says ({n}, {rows}, {cols}) = "
                         f"{expected} bytes of pixels, the file has {len(raw) - 16}")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols).copy()


class MovingMNIST(Dataset):
    """Synthetic Moving MNIST: ``num_sequences`` sequences, each a float32 tensor
    (seq_len, 1, image_size, image_size) with values in [0, 1].

    Sequence ``i`` depends only on ``(seed, i)`` (its own random generator), so it is the
    same in every worker, epoch and run, and a train/val split by index is reproducible.

    Args:
        num_sequences: dataset length.
        seq_len: frames per sequence.
        image_size: canvas height and width.
        num_digits: digits per sequence.
        digit_size: glyph height and width (must match ``digits`` when given).
        seed: base seed; use different seeds for independent train and test sets.
        digits: optional (N, digit_size, digit_size) uint8 glyphs (e.g. real MNIST from
            :func:`load_mnist_idx`); each digit picks one at random. By default glyphs are
            rendered procedurally (:mod:`fastcells.data.glyphs`): a random digit 0-9 with a
            random slant, size and stroke thickness.
        step_length: speed as a fraction of the free canvas (image_size - digit_size) per
            frame; 0.1 as in the standard generator.
    """

    def __init__(self, num_sequences: int, seq_len: int = 20, image_size: int = 64,
                 num_digits: int = 2, digit_size: int = 28, seed: int = 0, digits=None,
                 step_length: float = 0.1):
        for name, value, low in (("num_sequences", num_sequences, 1), ("seq_len", seq_len, 1),
                                 ("image_size", image_size, 1), ("num_digits", num_digits, 1),
                                 ("digit_size", digit_size, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        if image_size <= digit_size:
            raise ValueError(f"image_size ({image_size}) must exceed digit_size ({digit_size}) "
                             f"for the digits to move")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
        if not step_length > 0:
            raise ValueError(f"step_length: expected a positive float, got {step_length!r}")
        if digits is not None:
            digits = np.asarray(digits)
            if digits.ndim != 3 or digits.shape[0] < 1 or digits.shape[1:] != (digit_size,
                                                                              digit_size):
                raise ValueError(f"digits: expected shape (N, {digit_size}, {digit_size}) with "
                                 f"N >= 1, got {digits.shape}")
            if digits.dtype != np.uint8:
                raise TypeError(f"digits: expected uint8 glyphs (0-255), got {digits.dtype}")
        self.num_sequences = num_sequences
        self.seq_len = seq_len
        self.image_size = image_size
        self.num_digits = num_digits
        self.digit_size = digit_size
        self.seed = int(seed)
        self.digits = digits
        self.step_length = float(step_length)

    def __len__(self) -> int:
        return self.num_sequences

    def _rng(self, index: int) -> np.random.Generator:
        # a SeedSequence from (seed, index): independent streams per item, no shared state
        return np.random.default_rng([self.seed, index])

    def _check_index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += self.num_sequences
        if not 0 <= index < self.num_sequences:
            raise IndexError(f"index {index} out of range for {self.num_sequences} sequences")
        return index

    def _trajectory(self, rng: np.random.Generator) -> np.ndarray:
        """(seq_len, 2) integer top-left (y, x) positions of one digit."""
        y, x = rng.random(2)
        theta = rng.random() * 2.0 * np.pi
        vy, vx = np.sin(theta), np.cos(theta)
        pos = np.empty((self.seq_len, 2))
        # as in the standard generator: step first, then reflect at the walls, then record
        for t in range(self.seq_len):
            y += vy * self.step_length
            x += vx * self.step_length
            if x <= 0.0:
                x, vx = 0.0, -vx
            if x >= 1.0:
                x, vx = 1.0, -vx
            if y <= 0.0:
                y, vy = 0.0, -vy
            if y >= 1.0:
                y, vy = 1.0, -vy
            pos[t] = y, x
        return (pos * (self.image_size - self.digit_size)).astype(np.int64)

    def _sample(self, index: int):
        rng = self._rng(index)
        glyphs, paths = [], []
        for _ in range(self.num_digits):
            if self.digits is None:
                glyphs.append(render_digit(int(rng.integers(10)), rng, self.digit_size))
            else:
                glyphs.append(self.digits[rng.integers(len(self.digits))])
            paths.append(self._trajectory(rng))
        return glyphs, np.stack(paths)

    def trajectories(self, index: int) -> np.ndarray:
        """(num_digits, seq_len, 2) top-left (y, x) pixel positions of the digits of
        sequence ``index``, each in [0, image_size - digit_size]."""
        return self._sample(self._check_index(index))[1]

    def __getitem__(self, index: int) -> torch.Tensor:
        glyphs, paths = self._sample(self._check_index(index))
        d = self.digit_size
        frames = np.zeros((self.seq_len, self.image_size, self.image_size), dtype=np.uint8)
        for glyph, path in zip(glyphs, paths):
            for t, (top, left) in enumerate(path):
                window = frames[t, top:top + d, left:left + d]
                np.maximum(window, glyph, out=window)
        return torch.from_numpy(frames).unsqueeze(1).float().div_(255.0)

    def __repr__(self) -> str:
        source = "procedural glyphs" if self.digits is None else f"{len(self.digits)} glyphs"
        return (f"MovingMNIST(num_sequences={self.num_sequences}, seq_len={self.seq_len}, "
                f"image_size={self.image_size}, num_digits={self.num_digits}, "
                f"seed={self.seed}, {source})")
