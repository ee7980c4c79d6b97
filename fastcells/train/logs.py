"""Metrics logged as JSON lines and CSV (and TensorBoard when installed and asked for)."""
from __future__ import annotations

import csv
import json
import os

from ..utils.jsonio import strict_dumps


class RunLog:
    """Appends one record per call to ``<out>/<name>.jsonl`` and ``<out>/<name>.csv``."""

    def __init__(self, out_dir: str, name: str, tensorboard: bool = False):
        self.jsonl = os.path.join(out_dir, f"{name}.jsonl")
        self.csv = os.path.join(out_dir, f"{name}.csv")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("tensorboard logging needs the tensorboard package: "
                                  "pip install tensorboard") from e
            self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"))
        self.name = name

    def write(self, record: dict) -> None:
        scalars = self._append(record)
        if self.writer is not None:
            for k, v in scalars.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"{self.name}/{k}", v, record.get("step", 0))

    def _append(self, record: dict) -> dict:
        """Appends to the JSONL and CSV files; returns the scalar fields."""
        with open(self.jsonl, "a") as f:  # NaN as null: strict JSON lines
            f.write(strict_dumps(record) + "\n")
        scalars = {k: v for k, v in record.items() if not isinstance(v, (list, dict))}
        new = not os.path.exists(self.csv)
        with open(self.csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(scalars))
            if new:
                w.writeheader()
            w.writerow(scalars)
        return scalars

    def read(self) -> list[dict]:
        if not os.path.exists(self.jsonl):
            return []
        with open(self.jsonl) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drops records past ``step`` (a resumed run rewrites them) from both files."""
        records = [r for r in self.read() if r.get("step", 0) <= step]
        for path in (self.jsonl, self.csv):
            if os.path.exists(path):
                os.remove(path)
        for r in records:
            self._append(r)
