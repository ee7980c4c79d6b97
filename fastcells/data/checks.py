"""Every sequence of a dataset checked once, before training reads it: frames finite and in
[0, 1], and (folders) every frame readable with the shape of the others.

A check of ``dataset[0]`` alone lets an array whose later sequences are x255 train to a PSNR
of -36 dB, and one NaN pixel make every validation metric NaN. Arrays are checked whole,
vectorised, in chunks (a memory-mapped file is streamed, never loaded at once); a folder
is read once, with a progress bar, and the error names the file.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .arrays import NpySequences, PredRNNClips
from .cityscapes import Cityscapes
from .folder import SequenceFolder
from .moving_mnist import MovingMNIST

TOLERANCE = 1e-3  # frames may sit this far outside [0, 1] (rounding of stored floats)
CHUNK_BYTES = 64 * 2**20


def check_values(dataset: Dataset, spec: str = "data", progress: bool = True) -> None:
    """Raises a ValueError naming the first sequence (and file) whose frames are not finite
    or not in [0, 1], or (folders) that cannot be read or has another frame shape."""
    if isinstance(dataset, Subset):
        # the whole underlying data is checked: the other split comes from it too
        return check_values(dataset.dataset, spec, progress)
    if isinstance(dataset, MovingMNIST):
        return None  # generated here, in [0, 1] by construction
    if isinstance(dataset, NpySequences):
        return _check_npy(dataset, spec)
    if isinstance(dataset, PredRNNClips):
        return _check_clips(dataset, spec)
    if isinstance(dataset, SequenceFolder):
        return _check_folder(dataset, spec, progress)
    if isinstance(dataset, Cityscapes):
        return _check_cityscapes(dataset, spec, progress)
    return _check_items(dataset, spec, progress)


FIX = ("the models, losses and metrics expect frames scaled to [0, 1]: store uint8 "
       "(read as x/255), uint16 (x/65535) or floats already in [0, 1]")


def _problem(values: np.ndarray, scale: float = 1.0) -> str | None:
    """What is wrong with frames ``values * scale``, or None, without making that array:
    finiteness on the stored values, the range from their min and max (a float64 copy of a
    64 MiB uint8 chunk would take 512 MiB)."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return "holds NaN or infinite values"
    low, high = float(values.min()) * scale, float(values.max()) * scale
    if low < -TOLERANCE or high > 1 + TOLERANCE:
        return f"has values in [{low:g}, {high:g}]"
    return None


def _cannot_fail(dtype: np.dtype, scale: float) -> bool:
    """uint8/uint16/bool frames at their default scale lie in [0, 1] by construction."""
    from ._common import unit_scale

    return dtype.kind in "ub" and scale == unit_scale(dtype, None, "")


def _check_npy(ds: NpySequences, spec: str) -> None:
    arr = np.load(ds.path, mmap_mode="r", allow_pickle=False)
    if _cannot_fail(arr.dtype, ds.scale):
        return
    n_axis = ds.layout.index("N")
    per_sequence = max(1, arr.size // max(1, arr.shape[n_axis]) * arr.itemsize)
    step = max(1, CHUNK_BYTES // per_sequence)
    for start in range(0, ds.num_sequences, step):
        index = [slice(None)] * arr.ndim
        index[n_axis] = slice(start, start + step)
        chunk = np.asarray(arr[tuple(index)])
        if _problem(chunk, ds.scale) is None:
            continue
        for i in range(chunk.shape[n_axis]):  # the first bad sequence of the chunk
            problem = _problem(np.take(chunk, i, axis=n_axis), ds.scale)
            if problem:
                raise ValueError(f"data: {spec!r}: sequence {start + i} of {ds.path!r} "
                                 f"{problem}; {FIX}, or pass scale=")


def _check_clips(ds: PredRNNClips, spec: str) -> None:
    arrays = [("input_raw_data", ds._inputs)]
    if ds._outputs is not ds._inputs:
        arrays.append(("output_raw_data", ds._outputs))
    for name, arr in arrays:
        if _cannot_fail(arr.dtype, ds.scale):
            continue
        step = max(1, CHUNK_BYTES // max(1, arr[0].nbytes))
        for start in range(0, len(arr), step):
            chunk = arr[start:start + step]
            if _problem(chunk, ds.scale) is None:
                continue
            for j in range(len(chunk)):
                problem = _problem(chunk[j], ds.scale)
                if problem:
                    raise ValueError(f"data: {spec!r}: frame {start + j} of {name!r} in "
                                     f"{ds.path!r} {problem}; {FIX}")


def _check_folder(ds: SequenceFolder, spec: str, progress: bool) -> None:
    """Every frame file of every sequence read once: readable, of the first sequence's
    shape, finite, in [0, 1]; the error names the file."""
    from tqdm.auto import tqdm

    from ._common import unit_scale
    from .folder import read_image

    total = sum(n for _, _, n in ds.sequences)
    bar = tqdm(total=total, desc=f"checking {spec}", unit="frame",
               disable=not progress or total < 500, leave=False)
    for kind, where, n in ds.sequences:
        if kind == "npy":
            arr = np.load(where, mmap_mode="r", allow_pickle=False)
            frames = [(where, np.asarray(arr, dtype=np.float64)
                       * unit_scale(arr.dtype, None, where))]
            shape = (1,) + arr.shape[1:] if arr.ndim == 3 else arr.shape[1:]
            if tuple(shape) != ds.frame_shape:
                raise ValueError(f"data: {spec!r}: {where!r} has frames of shape (C, H, W) = "
                                 f"{tuple(shape)}, the first sequence {ds.frame_shape}")
        else:
            frames = []
            for path in where:
                image = read_image(path)  # names the file it cannot read
                if image.shape != ds.frame_shape:
                    raise ValueError(f"data: {spec!r}: frame {path!r} has shape (C, H, W) = "
                                     f"{image.shape}, the first sequence's is {ds.frame_shape}")
                frames.append((path, image))
        for path, values in frames:
            problem = _problem(values)
            if problem:
                raise ValueError(f"data: {spec!r}: {path!r} {problem}; {FIX}")
        bar.update(n)
    bar.close()


def _check_cityscapes(ds: Cityscapes, spec: str, progress: bool) -> None:
    """Every frame of every snippet read once, as items read it (decoded, cropped, resized):
    readable and, at the stored size (image_size=None), of one shape; the error names the
    file. 8-bit frames scaled by 1/255 need no range check."""
    from tqdm.auto import tqdm

    total = sum(len(paths) for _, _, paths in ds.snippets)
    bar = tqdm(total=total, desc=f"checking {spec}", unit="frame",
               disable=not progress or total < 500, leave=False)
    shape = None
    for _, _, paths in ds.snippets:
        for path in paths:
            frame = ds.read_frame(path)   # names the file it cannot read
            if shape is None:
                shape, first = frame.shape, path
            elif frame.shape != shape:
                raise ValueError(f"data: {spec!r}: frame {path!r} is {frame.shape[1]}x"
                                 f"{frame.shape[2]}, {first!r} {shape[1]}x{shape[2]}; pass "
                                 f"image_size= to resize them all")
            problem = _problem(frame)
            if problem:
                raise ValueError(f"data: {spec!r}: {path!r} {problem}; {FIX}")
        bar.update(len(paths))
    bar.close()


def _check_items(ds: Dataset, spec: str, progress: bool) -> None:
    """Any other dataset: every item read once."""
    from tqdm.auto import tqdm

    n = len(ds)
    for i in tqdm(range(n), desc=f"checking {spec}", unit="seq",
                  disable=not progress or n < 50, leave=False):
        frames = ds[i]
        if isinstance(frames, torch.Tensor):
            frames = frames.detach().double().cpu().numpy()
        problem = _problem(np.asarray(frames, dtype=np.float64))
        if problem:
            raise ValueError(f"data: {spec!r}: sequence {i} {problem}; {FIX}")
