"""TaxiBJ crowd flows (Zhang et al., 2017): in/out flow maps of Beijing on a 32x32 grid,
every 30 minutes.

Normalisation: flows are min-max scaled to [0, 1], ``x01 = (x - data_min) / (data_max -
data_min)``, with ``data_min``/``data_max`` taken over the whole file (or given as
``data_range``, e.g. the training file's, to scale a test file the same way). Metrics on
these [0, 1] values are what OpenSTL's TaxiBJ tables report; :meth:`TaxiBJ.denormalize`
returns flows in the file's units.
"""
from __future__ import annotations

import datetime as _dt

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import check_file, check_seq_len, to_tensor

SLOTS_PER_DAY = 48  # TaxiBJ timestamps: YYYYMMDD + slot 01..48 (30-minute intervals)


def _slot_index(date) -> int:
    """Absolute 30-minute slot of a TaxiBJ timestamp such as b'2013070101'."""
    s = date.decode() if isinstance(date, bytes) else str(date)
    day = _dt.date(int(s[:4]), int(s[4:6]), int(s[6:8])).toordinal()
    return day * SLOTS_PER_DAY + int(s[8:]) - 1


class TaxiBJ(Dataset):
    """TaxiBJ sequences; item i is a float32 tensor (seq_len, C, H, W) (C=2: inflow,
    outflow; 32x32) in [0, 1].

    Two file layouts:

    * flows over time, (N, C, H, W): the original ``BJ16_M32x32_T30_InOut.h5`` (datasets
      ``data`` and ``date``; reading it needs h5py) or an ``.npz`` with a ``data`` array (and
      optionally ``date``). Items are all windows of ``seq_len`` consecutive frames
      (``stride`` apart); with timestamps and ``contiguous=True`` only windows without a
      missing slot (TaxiBJ has gaps) are kept. Scaled by min-max (module docstring).
    * OpenSTL's ``dataset.npz``: ``X_<split>`` and ``Y_<split>`` (N, T_in, C, H, W) and
      (N, T_out, C, H, W), already scaled to [-1, 1]; item i is X then Y (first ``seq_len``
      frames), mapped to [0, 1] by (x + 1) / 2 (``data_min=-1``, ``data_max=1``), as
      OpenSTL's ``dataloader_taxibj`` does.

    Args:
        path: ``.h5``/``.hdf5`` or ``.npz`` file.
        seq_len: frames per item (None: all of an OpenSTL clip; required for flows).
        split: which ``X_``/``Y_`` pair of an OpenSTL file (``"train"``, ``"test"``...).
        stride: frames between window starts (flows layout).
        contiguous: keep only windows of consecutive timestamps (flows with ``date``).
        data_range: (min, max) for the min-max scaling instead of the file's own.
    """

    def __init__(self, path, seq_len: int | None = 8, split: str = "train", stride: int = 1,
                 contiguous: bool = True, data_range: tuple[float, float] | None = None):
        self.path = check_file(path, (".npz", ".h5", ".hdf5"), "TaxiBJ")
        where = f"TaxiBJ({self.path!r})"
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride: expected a positive int, got {stride!r}")
        dates = None
        if self.path.lower().endswith(".npz"):
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
            except (ValueError, OSError) as e:
                raise ValueError(f"{where}: cannot read as an .npz archive: {e}") from None
        else:
            try:
                import h5py
            except ImportError:
                raise ImportError(f"{where}: reading .h5 files needs h5py: pip install h5py"
                                  ) from None
            try:
                with h5py.File(self.path, "r") as f:
                    arrays = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}
            except OSError as e:
                raise ValueError(f"{where}: cannot read as an HDF5 file: {e}") from None

        self.windows: list[tuple[int, int]] = []   # flows layout: (clip 0, start frame)
        x_key, y_key = f"X_{split}", f"Y_{split}"
        if "data" in arrays:
            flows = arrays["data"]
            if flows.ndim != 4 or 0 in flows.shape:
                raise ValueError(f"{where}: 'data' should have shape (N, C, H, W) (TaxiBJ: "
                                 f"(N, 2, 32, 32)), got {flows.shape}")
            if seq_len is None:
                raise ValueError("seq_len: TaxiBJ flows are cut into windows; give seq_len")
            self.seq_len = check_seq_len(seq_len, flows.shape[0], where)
            if "date" in arrays:
                dates = arrays["date"]
                if dates.shape != (flows.shape[0],):
                    raise ValueError(f"{where}: 'date' should have shape ({flows.shape[0]},) "
                                     f"(one timestamp per frame), got {dates.shape}")
            starts = range(0, flows.shape[0] - self.seq_len + 1, stride)
            if dates is not None and contiguous:
                try:
                    slots = np.array([_slot_index(d) for d in dates])
                except (ValueError, UnicodeDecodeError) as e:
                    raise ValueError(f"{where}: 'date' entries should look like b'2013070101' "
                                     f"(YYYYMMDD + slot 01-48): {e}") from None
                gap = np.concatenate([[0], np.cumsum(np.diff(slots) != 1)])
                starts = [s for s in starts if gap[s] == gap[s + self.seq_len - 1]]
            self.windows = [(0, s) for s in starts]
            if not self.windows:
                raise ValueError(f"{where}: no window of {self.seq_len} consecutive frames")
            self._data = flows[None]
            file_range = (float(flows.min()), float(flows.max()))
        elif x_key in arrays and y_key in arrays:
            x, y = arrays[x_key], arrays[y_key]
            if x.ndim != 5 or y.ndim != 5 or x.shape[0] != y.shape[0] or \
                    x.shape[2:] != y.shape[2:] or 0 in x.shape:
                raise ValueError(f"{where}: {x_key!r} and {y_key!r} should have shapes "
                                 f"(N, T_in, C, H, W) and (N, T_out, C, H, W), got {x.shape} "
                                 f"and {y.shape}")
            self._data = np.concatenate([x, y], axis=1)
            self.seq_len = check_seq_len(seq_len, self._data.shape[1], where)
            self.windows = [(i, 0) for i in range(self._data.shape[0])]
            file_range = (-1.0, 1.0)      # OpenSTL's files are scaled to [-1, 1]
        else:
            raise ValueError(f"{where}: expected a 'data' array (N, C, H, W) of flows or "
                             f"OpenSTL's {x_key!r}/{y_key!r} arrays (N, T, C, H, W); found "
                             f"keys {sorted(arrays)}")
        if not np.isfinite(self._data).all():
            raise ValueError(f"{where}: the flows contain NaN or infinite values")
        self.data_min, self.data_max = (float(v) for v in (data_range or file_range))
        if not self.data_max > self.data_min:
            raise ValueError(f"data_range: expected min < max, got ({self.data_min}, "
                             f"{self.data_max})")
        self.dates = dates
        self.frame_shape = tuple(self._data.shape[2:])

    @property
    def scale(self) -> float:
        """Flow units per normalised unit: ``x = x01 * scale + data_min``."""
        return self.data_max - self.data_min

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Maps [0, 1] values (e.g. predictions) back to the file's flow units."""
        return x * self.scale + self.data_min

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> torch.Tensor:
        clip, start = self.windows[index]
        frames = self._data[clip, start:start + self.seq_len]
        return to_tensor((frames - self.data_min) / self.scale, 1.0)

    def __repr__(self) -> str:
        return (f"TaxiBJ({self.path!r}, items={len(self)}, seq_len={self.seq_len}, "
                f"range=({self.data_min:g}, {self.data_max:g}))")
