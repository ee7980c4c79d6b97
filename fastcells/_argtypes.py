"""What the command lines share: argparse value types and the output-place check."""
from __future__ import annotations

import argparse
import os


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse prefixes the option's name)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def ensure_writable_dir(path: str) -> str:
    """Creates ``path`` if needed and writes a probe file there: checked before the work it
    is for, so a run does not end in a write error. Raises the OSError that says why not."""
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write-test-{os.getpid()}")
    with open(probe, "w"):
        pass
    os.remove(probe)
    return path
