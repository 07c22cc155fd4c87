"""Toy metrics (docs/algorithm.md §11, §15): in-support fraction, square balance, unbiased RBF MMD."""
from __future__ import annotations

import numpy as np
import pytest

from cdrl.data.toy2d import SQUARE_CORNERS, SQUARE_SCALE, sample_toy
from cdrl.metrics.toy import in_support_fraction, rbf_mmd2, square_balance, square_shares, toy_report


def _naive_mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Unbiased MMD² from full kernel matrices, the textbook formula."""

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sq_dist = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
        return np.exp(-sq_dist / (2 * bandwidth**2))

    m, n = len(x), len(y)
    k_xx, k_yy = kernel(x, x), kernel(y, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return within_x + within_y - 2 * kernel(x, y).mean()


def test_perfect_samples_are_in_support_and_balanced():
    points = sample_toy("8squares", 20_000, seed=0)
    assert in_support_fraction(points) == 1.0
    assert square_balance(points) < 0.02
    assert square_shares(points).sum() == pytest.approx(1.0)


def test_square_edges_count_as_inside():
    corners = SQUARE_CORNERS * SQUARE_SCALE
    assert in_support_fraction(np.concatenate([corners, corners + SQUARE_SCALE])) == 1.0


def test_points_outside_every_square():
    outside = np.array([[2.0, 2.0], [-2.0, -2.0], [100.0, 0.0], [6.0, 6.0]])  # (6, 6) lies in cell (1, 1), empty
    assert in_support_fraction(outside) == 0.0
    assert square_balance(outside) == 1.0
    np.testing.assert_array_equal(square_shares(outside), np.zeros(8))


def test_one_square_only_gives_balance_seven_eighths():
    rng = np.random.default_rng(0)
    points = (SQUARE_CORNERS[3] + rng.random((500, 2))) * SQUARE_SCALE
    assert square_balance(points) == pytest.approx(7 / 8)
    assert square_shares(points)[3] == 1.0


def test_mmd_same_toy_is_near_zero_and_different_toys_are_far_apart():
    first, second = sample_toy("8squares", 10_000, seed=1), sample_toy("8squares", 10_000, seed=2)
    assert abs(rbf_mmd2(first, second)) < 1e-3
    assert rbf_mmd2(first, sample_toy("8gaussians", 10_000, seed=3)) > 0.01


@pytest.mark.parametrize("bandwidth", [0.5, 1.0, 4.0])
def test_chunked_mmd_equals_unchunked(bandwidth):
    x, y = sample_toy("8squares", 150, seed=4), sample_toy("2spirals", 120, seed=5)
    expected = _naive_mmd2(x.astype(np.float64), y.astype(np.float64), bandwidth)
    for block_entries in (7, 1_000, 10**9):
        assert rbf_mmd2(x, y, bandwidth, max_kernel_entries=block_entries) == pytest.approx(expected, abs=1e-6)


def test_mmd_max_points_keeps_the_first_points():
    x, y = sample_toy("rings", 400, seed=6), sample_toy("rings", 300, seed=7)
    assert rbf_mmd2(x, y, max_points=100) == pytest.approx(rbf_mmd2(x[:100], y[:100]))


def test_toy_report_keys():
    samples, reference = sample_toy("8squares", 2_000, seed=8), sample_toy("8squares", 2_000, seed=9)
    report = toy_report(samples, reference, bandwidths=(1.0, 4.0))
    assert set(report) == {"in_support", "balance", "mmd_bw1", "mmd_bw4"}
    assert report["in_support"] == 1.0
    other = toy_report(sample_toy("rings", 500, seed=0), sample_toy("rings", 500, seed=1), distribution="rings")
    assert set(other) == {"mmd_bw1"}
