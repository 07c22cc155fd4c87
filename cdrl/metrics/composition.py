"""Where composed 2-D samples land: the fraction in the 8-squares toy's squares of one quadrant."""
from __future__ import annotations

import numpy as np

from cdrl.data.toy2d import SQUARE_CORNERS, SQUARE_SCALE
from cdrl.metrics.toy import _square_membership

SQUARE_CENTERS = (SQUARE_CORNERS + 0.5) * SQUARE_SCALE
QUADRANTS = {"top_left": (-1, 1), "top_right": (1, 1), "bottom_left": (-1, -1), "bottom_right": (1, -1)}


def quadrant_fractions(points: np.ndarray) -> dict[str, float]:
    """Fraction of all points inside a square of each quadrant (the four sum to the in-support fraction)."""
    membership = _square_membership(points)
    out = {}
    for name, (sx, sy) in QUADRANTS.items():
        squares = (np.sign(SQUARE_CENTERS[:, 0]) == sx) & (np.sign(SQUARE_CENTERS[:, 1]) == sy)
        out[name] = float(membership[:, squares].any(axis=1).mean()) if len(points) else 0.0
    return out
