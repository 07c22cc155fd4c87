"""Offline data sources (§11): the 2-D toys, scikit-learn digits and sample-image patches."""
from __future__ import annotations

import numpy as np
import pytest

from cdrl.data import BUILTIN_DATASETS, TOY_DISTRIBUTIONS, load_builtin, sample_toy


def test_eight_squares_statistics():
    x = sample_toy("8squares", 50_000, 0)
    assert x.dtype == np.float32 and x.shape == (50_000, 2)
    assert np.abs(x.mean(0)).max() < 0.1
    assert np.allclose(x.var(0), 21.4, rtol=0.03)
    assert np.abs(x).max() <= 8.0


@pytest.mark.parametrize("name", TOY_DISTRIBUTIONS)
def test_toys_are_seeded_and_bounded(name):
    a, b = sample_toy(name, 1000, 3), sample_toy(name, 1000, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, sample_toy(name, 1000, 4))
    assert np.isfinite(a).all() and np.abs(a).max() < 9


def test_digits():
    x, y = load_builtin("digits")
    assert x.shape == (1797, 1, 8, 8) and x.min() == -1.0 and x.max() == 1.0 and set(y) == set(range(10))


def test_patches():
    x, y = load_builtin("patches", 50, 1)
    assert x.shape == (50, 3, 32, 32) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.1
    assert set(np.unique(y)) <= {0, 1}


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="nope"):
        load_builtin("nope")
    assert "digits" in BUILTIN_DATASETS
