"""Sequences stored as numpy arrays: ``.npy`` files (``mnist_test_seq.npy`` and generic
(N, T, C, H, W) arrays) and the ``.npz`` clip archives of predrnn-pytorch."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import check_file, check_seq_len, to_tensor, unit_scale

# layout -> axes of (N, T, C, H, W) it stores; a missing "C" means one channel
LAYOUTS = {
    "TNHW": "TNHW",     # mnist_test_seq.npy: (20, 10000, 64, 64)
    "NTHW": "NTHW",
    "NTCHW": "NTCHW",
    "NTHWC": "NTHWC",
    "TNCHW": "TNCHW",
}


class NpySequences(Dataset):
    """Sequences from one ``.npy`` array; item i is a float32 tensor (T, C, H, W) in [0, 1].

    Args:
        path: the ``.npy`` file. It is memory-mapped, so a large file is not read at once.
        layout: axis order of the stored array: ``"TNHW"`` (``mnist_test_seq.npy``, the
            standard Moving MNIST test file, (20, 10000, 64, 64) uint8), ``"NTHW"``,
            ``"NTCHW"``, ``"NTHWC"``, ``"TNCHW"``, or ``"auto"``: 5-D arrays are NTCHW;
            4-D arrays are TNHW when the file name starts with ``mnist_test_seq``, else NTHW.
        seq_len: frames per item: the first ``seq_len`` frames of each sequence (all when None).
        scale: factor to [0, 1]; by default 1/255 for uint8, 1/65535 for uint16 and 1 for
            float arrays (taken as already normalised).
    """

    def __init__(self, path, layout: str = "auto", seq_len: int | None = None,
                 scale: float | None = None):
        self.path = check_file(path, (".npy",), "NpySequences")
        try:
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"NpySequences: cannot read {self.path!r} as a .npy array: {e}"
                             ) from None
        if layout == "auto":
            if arr.ndim == 5:
                layout = "NTCHW"
            elif arr.ndim == 4:
                name = self.path.replace("\\", "/").rsplit("/", 1)[-1]
                layout = "TNHW" if name.startswith("mnist_test_seq") else "NTHW"
            else:
                raise ValueError(f"NpySequences: {self.path!r} holds an array of shape "
                                 f"{arr.shape}; expected (N, T, C, H, W) or, 4-D, (N, T, H, W) "
                                 f"or mnist_test_seq's (T, N, H, W)")
        if layout not in LAYOUTS:
            raise ValueError(f"layout: expected 'auto' or one of {sorted(LAYOUTS)}, "
                             f"got {layout!r}")
        if arr.ndim != len(layout):
            raise ValueError(f"NpySequences: {self.path!r} holds an array of shape {arr.shape}; "
                             f"layout {layout!r} expects {len(layout)} dimensions "
                             f"({', '.join(layout)})")
        if arr.dtype.kind not in "uif" and arr.dtype != np.bool_:
            raise ValueError(f"NpySequences: {self.path!r} has dtype {arr.dtype}; expected "
                             f"numeric frames")
        if 0 in arr.shape:
            raise ValueError(f"NpySequences: {self.path!r} is empty (shape {arr.shape})")
        self.layout = layout
        self._arr = arr      # a memory map; reopened per process (see __getstate__)
        sizes = dict(zip(layout, arr.shape))
        self.num_sequences = sizes["N"]
        self.frames_available = sizes["T"]
        self.frame_shape = (sizes.get("C", 1), sizes["H"], sizes["W"])
        self.seq_len = check_seq_len(seq_len, sizes["T"], f"NpySequences({self.path!r})")
        self.scale = unit_scale(arr.dtype, scale, f"NpySequences({self.path!r})")

    def __getstate__(self):
        # pickling a memory map copies the whole array (DataLoader workers under spawn):
        # send the path instead and map the file again on first use
        state = self.__dict__.copy()
        state["_arr"] = None
        return state

    def __len__(self) -> int:
        return self.num_sequences

    def __getitem__(self, index: int) -> torch.Tensor:
        index = int(index)
        if not -self.num_sequences <= index < self.num_sequences:
            raise IndexError(f"index {index} out of range for {self.num_sequences} sequences")
        if self._arr is None:
            self._arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        n_axis = self.layout.index("N")
        seq = np.take(self._arr, index, axis=n_axis)            # layout without N
        rest = self.layout.replace("N", "")
        seq = np.take(seq, np.arange(self.seq_len), axis=rest.index("T"))
        if "C" not in rest:
            seq = np.expand_dims(seq, rest.index("H"))
            rest = rest.replace("H", "CH")
        seq = np.transpose(seq, [rest.index(a) for a in "TCHW"])
        return to_tensor(seq, self.scale)

    def __repr__(self) -> str:
        return (f"NpySequences({self.path!r}, layout={self.layout!r}, n={self.num_sequences}, "
                f"seq_len={self.seq_len}, frame={self.frame_shape})")


class PredRNNClips(Dataset):
    """Clips from a predrnn-pytorch ``.npz`` archive (e.g. ``moving-mnist-train.npz``).

    The archive's keys, as thuml's ``core/data_provider/mnist.py`` reads them:
    ``clips`` (2, N, 2) int: for clip i, ``clips[0, i] = [start, length]`` of its input frames
    and ``clips[1, i] = [start, length]`` of its output (target) frames; ``dims`` (1, 3) =
    [[C, H, W]] (then both come from ``input_raw_data``) or (2, 3) (outputs from
    ``output_raw_data``, with frame shape ``dims[1]``); ``input_raw_data`` (frames, C, H, W).
    Item i is the input frames followed by the output frames, a float32 tensor
    (T_in + T_out, C, H, W) (20 x 1 x 64 x 64 for Moving MNIST).

    Args:
        path: the ``.npz`` file; its frame arrays are read into memory once.
        seq_len: frames per item (the first ``seq_len``); None: all, which requires every
            clip to have the same total length.
        scale: factor to [0, 1]; default 1/255 for uint8 frames and 1 for float frames
            (predrnn's archives store float32 in [0, 1]).
    """

    def __init__(self, path, seq_len: int | None = None, scale: float | None = None):
        self.path = check_file(path, (".npz",), "PredRNNClips")
        where = f"PredRNNClips({self.path!r})"
        try:
            with np.load(self.path, allow_pickle=False) as z:
                # an npz decompresses a key on every access: read each array once
                data = {k: z[k] for k in z.files}
        except (ValueError, OSError) as e:
            raise ValueError(f"{where}: cannot read as an .npz archive: {e}") from None
        missing = [k for k in ("clips", "dims", "input_raw_data") if k not in data]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}; a predrnn clip archive has "
                             f"'clips' (2, N, 2), 'dims' (1, 3) and 'input_raw_data' "
                             f"(frames, C, H, W); found {sorted(data)}")
        clips, dims, inputs = data["clips"], data["dims"], data["input_raw_data"]
        if clips.ndim != 3 or clips.shape[0] != 2 or clips.shape[2] != 2 or clips.shape[1] < 1:
            raise ValueError(f"{where}: 'clips' should have shape (2, N, 2) with N >= 1 "
                             f"([start, length] of input and output per clip), "
                             f"got {clips.shape}")
        if dims.shape not in ((1, 3), (2, 3)):
            raise ValueError(f"{where}: 'dims' should have shape (1, 3) or (2, 3) ([C, H, W] "
                             f"per frame), got {dims.shape}")
        outputs = inputs
        if dims.shape == (2, 3):
            if "output_raw_data" not in data:
                raise ValueError(f"{where}: 'dims' is (2, 3) but 'output_raw_data' is missing")
            outputs = data["output_raw_data"]
        for name, arr, d in (("input_raw_data", inputs, dims[0]),
                             ("output_raw_data" if outputs is not inputs else "input_raw_data",
                              outputs, dims[-1])):
            if arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(int(v) for v in d):
                raise ValueError(f"{where}: {name!r} should have shape (frames, "
                                 f"{', '.join(str(int(v)) for v in d)}) as 'dims' says, "
                                 f"got {arr.shape}")
        if tuple(dims[0]) != tuple(dims[-1]):
            raise ValueError(f"{where}: input frames {tuple(dims[0])} and output frames "
                             f"{tuple(dims[-1])} differ; a sequence needs one frame shape")
        clips = clips.astype(np.int64)
        for k, (arr, name) in enumerate(((inputs, "input"), (outputs, "output"))):
            start, length = clips[k, :, 0], clips[k, :, 1]
            bad = np.nonzero((start < 0) | (length < 0) | (start + length > len(arr)))[0]
            if len(bad):
                i = int(bad[0])
                raise ValueError(f"{where}: clip {i}'s {name} frames [{start[i]}, "
                                 f"{start[i] + length[i]}) fall outside the {len(arr)} stored "
                                 f"frames")
        totals = clips[0, :, 1] + clips[1, :, 1]
        shortest = int(totals.min())
        if seq_len is None and int(totals.max()) != shortest:
            raise ValueError(f"{where}: clips have between {shortest} and {int(totals.max())} "
                             f"frames; pass seq_len to crop them to one length")
        self.seq_len = check_seq_len(seq_len, shortest, where)
        self.scale = unit_scale(inputs.dtype, scale, where)
        self.clips, self._inputs, self._outputs = clips, inputs, outputs
        self.frame_shape = tuple(int(v) for v in dims[0])

    def __len__(self) -> int:
        return self.clips.shape[1]

    def __getitem__(self, index: int) -> torch.Tensor:
        (s0, n0), (s1, n1) = self.clips[:, index]
        frames = np.concatenate([self._inputs[s0:s0 + n0], self._outputs[s1:s1 + n1]])
        return to_tensor(frames[:self.seq_len], self.scale)

    def __repr__(self) -> str:
        return f"PredRNNClips({self.path!r}, n={len(self)}, seq_len={self.seq_len})"
