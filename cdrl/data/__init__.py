"""Data sources that work offline: 2-D toys and the images that ship inside scikit-learn."""
from __future__ import annotations

import numpy as np

from cdrl.data.images import load_digits, load_patches
from cdrl.data.toy2d import TOY_DISTRIBUTIONS, sample_toy

BUILTIN_DATASETS = (*TOY_DISTRIBUTIONS, "digits", "patches")


def load_builtin(name: str, num_points: int = 50_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """(data, labels) for a built-in dataset: float32 data and int64 labels (None for the 2-D toys)."""
    if name in TOY_DISTRIBUTIONS:
        return sample_toy(name, num_points, seed), None
    if name == "digits":
        return load_digits()
    if name == "patches":
        return load_patches(num_patches=num_points, seed=seed)
    raise ValueError(f"data.name: unknown built-in dataset {name!r}; choose one of {', '.join(BUILTIN_DATASETS)}")
