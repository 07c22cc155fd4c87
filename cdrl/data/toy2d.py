"""2-D toy distributions. ``8squares`` is the paper's toy (docs/algorithm.md §11), raw scale ±8."""
from __future__ import annotations

import numpy as np

# Lower-left corners of the eight unit cells of the paper's toy, before the ×4 scaling (§11).
SQUARE_CORNERS = np.array(
    [[1, 0], [0, 1], [0, -1], [1, -2], [-1, -2], [-2, -1], [-1, 0], [-2, 1]], dtype=np.float64
)
SQUARE_SCALE = 4.0
TOY_DISTRIBUTIONS = ("8squares", "8gaussians", "2spirals", "rings")


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def eight_squares(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform in a uniformly chosen one of 8 axis-aligned 4×4 squares (mean ≈ 0, var ≈ 21.4)."""
    cells = rng.integers(0, len(SQUARE_CORNERS), size=n)
    return (SQUARE_CORNERS[cells] + rng.random((n, 2))) * SQUARE_SCALE


def eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    """Eight Gaussians (std 0.5) evenly spaced on a circle of radius 5."""
    angles = 2 * np.pi * rng.integers(0, 8, size=n) / 8
    centers = 5.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centers + 0.5 * rng.standard_normal((n, 2))


def two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two interleaved Archimedean spirals with small Gaussian jitter, within about ±7."""
    turn = np.sqrt(rng.random(n)) * 3 * np.pi
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    points = sign[:, None] * np.stack([np.cos(turn) * turn, np.sin(turn) * turn], axis=1) * (7 / (3 * np.pi))
    return points + 0.15 * rng.standard_normal((n, 2))


def rings(n: int, rng: np.random.Generator) -> np.ndarray:
    """Four concentric rings (radii 1.75, 3.5, 5.25, 7) with jitter 0.1."""
    radius = 1.75 * rng.integers(1, 5, size=n)
    angle = 2 * np.pi * rng.random(n)
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return points + 0.1 * rng.standard_normal((n, 2))


_GENERATORS = {"8squares": eight_squares, "8gaussians": eight_gaussians, "2spirals": two_spirals, "rings": rings}


def sample_toy(name: str, num_points: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """``num_points`` float32 points of shape (N, 2) from a named toy distribution."""
    if name not in _GENERATORS:
        raise ValueError(f"unknown 2-D toy {name!r}; choose one of {', '.join(TOY_DISTRIBUTIONS)}")
    return _GENERATORS[name](num_points, _rng(seed)).astype(np.float32)


ATTRIBUTE_NAMES = ("left", "right", "bottom", "top")  # dataset labels 0..3 of ``eight_squares_with_attributes``


def eight_squares_with_attributes(num_points: int, seed: int | np.random.Generator = 0) -> tuple[np.ndarray, np.ndarray]:
    """``8squares`` points, each twice: once labelled with its horizontal attribute (0 left, 1 right: x < 0 or
    not), once with its vertical one (2 bottom, 3 top: y < 0 or not). Each label's conditional is a half
    plane's four squares, so composing "left" and "top" targets the two top-left squares."""
    points = eight_squares(num_points, _rng(seed)).astype(np.float32)
    horizontal = np.where(points[:, 0] < 0, 0, 1)
    vertical = np.where(points[:, 1] < 0, 2, 3)
    return np.concatenate([points, points]), np.concatenate([horizontal, vertical]).astype(np.int64)
