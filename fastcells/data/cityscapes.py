"""Cityscapes video snippets (Cordts et al., 2016) from the ``leftImg8bit_sequence`` package:
for every annotated frame, the 30 frames around it (19 before, 10 after), 2048x1024 RGB PNGs
laid out as::

    <root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png

Frames of one (city, seq) with consecutive frame numbers form runs; each run is cut into
snippets of ``snippet_len`` (30) frames. The video-prediction protocol of MCVD and VDT
(seed 002) uses these snippets at 128x128: 2 given frames, 28 predicted. Frames are centre-
cropped to the target's aspect ratio (a 1024x1024 square of a 2048x1024 frame, as seed 002's
``CenterCrop(1024)``) and resized with Pillow's bilinear filter (as torchvision's ``Resize``
on images), then scaled to [0, 1].

Decoding a 2048x1024 PNG takes tens of milliseconds: for training, store resized copies in
the same layout (file names unchanged, e.g. 128x128 PNGs, as seed 002 did) and point the
loader at them; frames already at the target size are used as they are.
"""
from __future__ import annotations

import os
import re

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import check_seq_len

SEQUENCE_DIR = "leftImg8bit_sequence"
SPLITS = ("train", "val", "test")
EXTENSIONS = (".png", ".jpg", ".jpeg")
SNIPPET_LEN = 30
_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit\.(png|jpe?g)$",
                   re.IGNORECASE)


def _sequence_root(root: str, split: str | None) -> tuple[str, str]:
    """(the split's folder, the split) from a dataset root, its ``leftImg8bit_sequence``
    folder, or a split folder inside it."""
    norm = os.path.normpath(root)
    parent, base = os.path.split(norm)
    if os.path.basename(parent) == SEQUENCE_DIR:        # .../leftImg8bit_sequence/<split>
        if split is not None and split != base:
            raise ValueError(f"split: {split!r}, but the path {root!r} is the {base!r} split")
        return norm, base
    split = "train" if split is None else split
    if not isinstance(split, str) or not split or os.sep in split:
        raise ValueError(f"split: expected a folder name such as {SPLITS}, got {split!r}")
    if base == SEQUENCE_DIR:
        seq_root = norm
    elif os.path.isdir(os.path.join(norm, SEQUENCE_DIR)):
        seq_root = os.path.join(norm, SEQUENCE_DIR)
    else:
        raise FileNotFoundError(f"Cityscapes: {root!r} holds no {SEQUENCE_DIR!r} folder; "
                                f"expected <root>/{SEQUENCE_DIR}/<split>/<city>/<city>_<seq>_"
                                f"<frame>_leftImg8bit.png (pass <root>, its {SEQUENCE_DIR} "
                                f"folder or a split folder in it)")
    folder = os.path.join(seq_root, split)
    if not os.path.isdir(folder):
        found = sorted(d for d in os.listdir(seq_root)
                       if os.path.isdir(os.path.join(seq_root, d)) and not d.startswith("."))
        raise FileNotFoundError(f"Cityscapes: no split {split!r} in {seq_root!r} (found "
                                f"{found or 'no folders'})")
    return folder, split


def _runs(frames: list[int]) -> list[list[int]]:
    """Sorted frame numbers -> maximal runs of consecutive numbers."""
    runs = [[frames[0]]]
    for f in frames[1:]:
        if f == runs[-1][-1] + 1:
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


def _size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (isinstance(image_size, (tuple, list)) and len(image_size) == 2 and
            all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in image_size)):
        return tuple(image_size)
    raise ValueError(f"image_size: expected a positive int, (H, W) or None, got {image_size!r}")


class Cityscapes(Dataset):
    """Snippets of the Cityscapes ``leftImg8bit_sequence`` package (module docstring for the
    layout); item i is a float32 tensor (seq_len, 3, H, W) in [0, 1].

    Args:
        root: the dataset root (holding ``leftImg8bit_sequence``), that folder, or one split
            folder in it (``.../leftImg8bit_sequence/val``: the split is taken from the path,
            which is how a ``cityscapes:<path>`` spec selects it on the command line).
        split: ``"train"`` (default), ``"val"`` or ``"test"``.
        seq_len: frames per item (the first ``seq_len`` of each snippet, or windows with
            ``stride``); None: whole snippets (then all must have the same length).
        image_size: output (H, W), or an int for square frames (default 128, seed 002's);
            None: the stored size (every frame must then have the same).
        crop: ``"center"`` (default): the largest centred region of the output's aspect
            ratio first; ``"none"``: the whole frame is resized (aspect ratio not kept).
        snippet_len: frames per snippet (30 in the release); a run of consecutive frames of
            one sequence that is not a whole number of snippets is an error naming the
            sequence, the run and the missing frames. None: every run is one snippet.
        stride: None: one item per snippet; an int: every window of ``seq_len`` frames
            starting at multiples of ``stride`` in each snippet.

    A frame that cannot be read raises a ValueError naming its file; ``check_values`` (run
    by the trainer before the first step) reads every frame once.
    """

    def __init__(self, root, split: str | None = None, seq_len: int | None = None,
                 image_size=128, crop: str = "center", snippet_len: int | None = SNIPPET_LEN,
                 stride: int | None = None):
        try:
            from PIL import Image  # noqa: F401
        except ImportError:
            raise ImportError("Cityscapes: reading the frames needs Pillow: pip install pillow"
                              ) from None
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"Cityscapes: no such folder {root!r}")
        self.size = _size(image_size)
        if crop not in ("center", "none"):
            raise ValueError(f"crop: expected 'center' or 'none', got {crop!r}")
        self.crop = crop
        for name, value in (("snippet_len", snippet_len), ("stride", stride)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name}: expected a positive int or None, got {value!r}")
        if stride is not None and seq_len is None:
            raise ValueError("stride: windows need seq_len")
        self.root, self.split = _sequence_root(root, split)
        self.snippet_len = snippet_len
        self.snippets = self._find_snippets()    # (city, seq, [frame paths])
        lengths = [len(paths) for _, _, paths in self.snippets]
        if seq_len is None and len(set(lengths)) > 1:
            raise ValueError(f"Cityscapes: {self.root!r} has snippets of {min(lengths)} to "
                             f"{max(lengths)} frames; pass seq_len")
        shortest = int(np.argmin(lengths))
        city, seq, paths = self.snippets[shortest]
        self.seq_len = check_seq_len(seq_len, lengths[shortest],
                                     f"Cityscapes: {city} sequence {seq} from {paths[0]!r}")
        self.items = [(i, start) for i, n in enumerate(lengths)
                      for start in (range(0, n - self.seq_len + 1, stride) if stride else [0])]
        self.frame_shape = None if self.size is None else (3, *self.size)

    def _find_snippets(self) -> list[tuple[str, str, list[str]]]:
        sequences: dict[tuple[str, str], dict[int, str]] = {}
        cities = sorted(d for d in os.listdir(self.root) if not d.startswith(".")
                        and os.path.isdir(os.path.join(self.root, d)))
        for city in cities:
            folder = os.path.join(self.root, city)
            for name in sorted(os.listdir(folder)):
                if name.startswith(".") or not name.lower().endswith(EXTENSIONS):
                    continue      # README files, thumbnails of file managers and the like
                path = os.path.join(folder, name)
                m = _NAME.match(name)
                if m is None or m["city"] != city:
                    raise ValueError(f"Cityscapes: {path!r} is not named "
                                     f"{city}_<seq>_<frame>_leftImg8bit.png")
                frames = sequences.setdefault((city, m["seq"]), {})
                frame = int(m["frame"])
                if frame in frames:
                    raise ValueError(f"Cityscapes: frame {frame} of {city} sequence "
                                     f"{m['seq']} is stored twice: {frames[frame]!r} and "
                                     f"{path!r}")
                frames[frame] = path
        if not sequences:
            raise ValueError(f"Cityscapes: {self.root!r} holds no frames (city folders of "
                             f"<city>_<seq>_<frame>_leftImg8bit.png)")
        snippets = []
        for (city, seq), frames in sorted(sequences.items()):
            numbers = sorted(frames)
            runs = _runs(numbers)
            for k, run in enumerate(runs):
                if self.snippet_len is None:
                    snippets.append((city, seq, [frames[f] for f in run]))
                    continue
                if len(run) % self.snippet_len:
                    raise ValueError(self._gap_message(city, seq, runs, k))
                for s in range(0, len(run), self.snippet_len):
                    snippets.append((city, seq, [frames[f] for f in
                                                 run[s:s + self.snippet_len]]))
        return snippets

    def _gap_message(self, city, seq, runs, k) -> str:
        run = runs[k]
        where = os.path.join(self.root, city)
        gaps = []
        if k > 0:
            gaps.append((runs[k - 1][-1] + 1, run[0] - 1))
        if k + 1 < len(runs):
            gaps.append((run[-1] + 1, runs[k + 1][0] - 1))
        missing = ", ".join(f"{a:06d}" if a == b else f"{a:06d}-{b:06d}" for a, b in gaps)
        hint = (f"frames {missing} of the sequence are missing" if missing else
                "no other frames of the sequence are there")
        return (f"Cityscapes: {city} sequence {seq} in {where!r}: frames {run[0]:06d}-"
                f"{run[-1]:06d} are {len(run)} consecutive frames, not whole "
                f"{self.snippet_len}-frame snippets ({hint}); restore the files, or pass "
                f"snippet_len=None to use each run of consecutive frames as a snippet")

    def read_frame(self, path: str) -> np.ndarray:
        """One frame as float32 (3, H, W) in [0, 1]: RGB, centre-cropped, resized."""
        from PIL import Image

        try:
            with Image.open(path) as img:
                img = img.convert("RGB")       # decodes the whole file: truncation shows here
                if self.size is not None:
                    th, tw = self.size
                    w, h = img.size
                    if self.crop == "center" and h * tw != w * th:
                        # torchvision's CenterCrop rounding
                        ch, cw = (h, round(h * tw / th)) if w * th > h * tw else \
                            (round(w * th / tw), w)
                        top, left = round((h - ch) / 2.0), round((w - cw) / 2.0)
                        img = img.crop((left, top, left + cw, top + ch))
                    if img.size != (tw, th):
                        img = img.resize((tw, th), Image.BILINEAR)
                arr = np.asarray(img)
        except (OSError, SyntaxError, ValueError) as e:   # PIL's broken-PNG errors vary
            raise ValueError(f"Cityscapes: cannot read frame {path!r}: {e}") from None
        return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32) / 255.0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        snippet, start = self.items[index]
        paths = self.snippets[snippet][2][start:start + self.seq_len]
        frames = [self.read_frame(p) for p in paths]
        for p, f in zip(paths, frames):
            if f.shape != frames[0].shape:
                raise ValueError(f"Cityscapes: frame {p!r} is {f.shape[1]}x{f.shape[2]}, "
                                 f"{paths[0]!r} {frames[0].shape[1]}x{frames[0].shape[2]}; "
                                 f"pass image_size= to resize them all")
        return torch.from_numpy(np.stack(frames))

    def __repr__(self) -> str:
        return (f"Cityscapes({self.root!r}, snippets={len(self.snippets)}, items={len(self)}, "
                f"seq_len={self.seq_len}, size={self.size}, crop={self.crop!r})")
