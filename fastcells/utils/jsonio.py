"""JSON that every parser reads: Python's ``json`` writes NaN and infinities as the
non-standard tokens ``NaN``/``Infinity`` (rejected by JavaScript, jq and strict parsers);
here they become ``null``."""
from __future__ import annotations

import json
import math


def finite_or_none(value):
    """``value`` with every non-finite float (in dicts, lists, tuples) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def strict_dumps(value, **kwargs) -> str:
    """``json.dumps`` of ``value`` with NaN/inf as null (``allow_nan=False`` guards it)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
