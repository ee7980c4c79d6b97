"""Procedural digit glyphs for the synthetic Moving-MNIST data: no download, no data files.

Each digit 0-9 is a handful of strokes (polylines) in a unit box; a glyph is rendered by
drawing those strokes, anti-aliased, into a ``size`` x ``size`` uint8 image after a random
affine jitter (width, height, shear, rotation, offset) and a random stroke thickness, so no
two renderings are identical and a model cannot memorise ten bitmaps.
"""
from __future__ import annotations

import numpy as np


def _arc(cx, cy, rx, ry, start_deg, end_deg, n=12):
    # angles in degrees, 0 = right, 90 = down (image coordinates, y grows downwards)
    a = np.deg2rad(np.linspace(start_deg, end_deg, n))
    return [(cx + rx * np.cos(t), cy + ry * np.sin(t)) for t in a]


# strokes per digit, coordinates in [0, 1] x [0, 1] (x right, y down)
_STROKES = {
    0: [_arc(0.5, 0.5, 0.42, 0.5, 0, 360, 24)],
    1: [[(0.25, 0.22), (0.55, 0.0), (0.55, 1.0)]],
    2: [_arc(0.5, 0.3, 0.4, 0.3, 190, 360, 10) + [(0.85, 0.42), (0.08, 1.0), (0.95, 1.0)]],
    3: [_arc(0.45, 0.25, 0.4, 0.25, 200, 450, 12),
        _arc(0.45, 0.73, 0.45, 0.27, 270, 520, 12)],
    4: [[(0.72, 1.0), (0.72, 0.0), (0.03, 0.68), (0.97, 0.68)]],
    5: [[(0.88, 0.0), (0.2, 0.0), (0.14, 0.45)],
        _arc(0.45, 0.68, 0.42, 0.32, 215, 500, 14)],
    6: [[(0.78, 0.02), (0.3, 0.45)], _arc(0.5, 0.7, 0.36, 0.3, 0, 360, 20)],
    7: [[(0.03, 0.0), (0.97, 0.0), (0.38, 1.0)]],
    8: [_arc(0.5, 0.24, 0.3, 0.24, 0, 360, 18), _arc(0.5, 0.72, 0.38, 0.28, 0, 360, 20)],
    9: [_arc(0.5, 0.3, 0.36, 0.3, 0, 360, 20), [(0.86, 0.3), (0.62, 1.0)]],
}


def _segments(label: int) -> np.ndarray:
    """(S, 2, 2) segment end points of digit ``label`` in the unit box."""
    segs = []
    for line in _STROKES[label]:
        pts = np.asarray(line, dtype=np.float64)
        segs.append(np.stack([pts[:-1], pts[1:]], axis=1))
    return np.concatenate(segs)


def render_digit(label: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """One randomly jittered glyph of digit ``label`` (0-9) as a (size, size) uint8 image.

    Like MNIST, the digit fills roughly the central 20/28 of the box.
    """
    if label not in _STROKES:
        raise ValueError(f"label: expected a digit 0-9, got {label!r}")
    s = size / 28.0
    width = rng.uniform(11.0, 16.0) * s
    height = rng.uniform(17.0, 20.0) * s
    shear = rng.uniform(-0.3, 0.3)          # x offset per unit of y (slant)
    angle = np.deg2rad(rng.uniform(-10.0, 10.0))
    thickness = rng.uniform(1.0, 2.0) * s   # stroke half-width in pixels
    centre = size / 2.0 + rng.uniform(-1.5, 1.5, size=2) * s

    seg = _segments(label) - 0.5            # centred unit box
    x = seg[..., 0] * width + shear * seg[..., 1] * height
    y = seg[..., 1] * height
    c, sn = np.cos(angle), np.sin(angle)
    px = c * x - sn * y + centre[0]
    py = sn * x + c * y + centre[1]
    a = np.stack([px[:, 0], py[:, 0]], -1)  # (S, 2) segment starts
    b = np.stack([px[:, 1], py[:, 1]], -1)  # (S, 2) segment ends

    # distance from every pixel centre to the nearest segment
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    p = np.stack([xx.ravel(), yy.ravel()], -1)[:, None, :]       # (P, 1, 2)
    ab = (b - a)[None]                                            # (1, S, 2)
    t = ((p - a[None]) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12)
    proj = a[None] + np.clip(t, 0.0, 1.0)[..., None] * ab
    dist = np.sqrt(((p - proj) ** 2).sum(-1)).min(axis=1)        # (P,)
    # one-pixel linear ramp at the stroke edge: anti-aliasing, grey levels as in MNIST
    ink = np.clip(thickness + 0.5 - dist, 0.0, 1.0).reshape(size, size)
    return np.round(ink * 255.0).astype(np.uint8)


def render_digits(labels, seed: int = 0, size: int = 28) -> np.ndarray:
    """(N, size, size) uint8 glyphs for ``labels`` (a sequence of digits 0-9)."""
    rng = np.random.default_rng(seed)
    return np.stack([render_digit(int(label), rng, size) for label in labels])
