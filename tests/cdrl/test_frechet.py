"""Fréchet distance (the FID formula, docs/algorithm.md §9)."""
from __future__ import annotations

import numpy as np
import pytest

from cdrl.metrics.frechet import feature_statistics, frechet_distance


def _random_stats(seed: int, dim: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return feature_statistics(rng.standard_normal((200, dim)) @ rng.standard_normal((dim, dim)) + rng.random(dim))


def test_identical_statistics_give_zero():
    mu, sigma = _random_stats(0)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_one_dimensional_closed_form():
    # Two 1-D Gaussians: d² = (μ1 − μ2)² + (σ1 − σ2)².
    distance = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]]))
    assert distance == pytest.approx(3.0**2 + (2.0 - 3.0) ** 2)


def test_diagonal_closed_form():
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, -1.0])
    expected = 2.0 + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected)


def test_symmetric():
    (mu1, sigma1), (mu2, sigma2) = _random_stats(1), _random_stats(2)
    forward = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert forward > 0
    assert forward == pytest.approx(frechet_distance(mu2, sigma2, mu1, sigma1), rel=1e-8)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_singular_covariances_stay_finite():
    sigma = np.diag([1.0, 0.0])
    assert frechet_distance(np.zeros(2), sigma, np.ones(2), sigma) == pytest.approx(2.0, abs=1e-4)


def test_non_finite_square_root_is_retried_with_a_diagonal_offset(monkeypatch):
    from scipy import linalg

    real_sqrtm = linalg.sqrtm
    calls = []

    def flaky_sqrtm(matrix):
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(linalg, "sqrtm", flaky_sqrtm)
    sigma = np.diag([1.0, 4.0])
    assert frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma, eps=1e-6) == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose(calls[1], (sigma + 1e-6 * np.eye(2)) @ (sigma + 1e-6 * np.eye(2)))


def test_feature_statistics_shapes_and_values():
    features = np.random.default_rng(3).standard_normal((1_000, 4))
    mu, sigma = feature_statistics(features)
    np.testing.assert_allclose(mu, features.mean(axis=0))
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False))
    assert feature_statistics(features[:, :1])[1].shape == (1, 1)


def test_full_covariance_closed_form():
    # Σ2 = c²·Σ1 commutes with Σ1, so (Σ1 Σ2)^{1/2} = c·Σ1 and d² = |μ1 − μ2|² + (1 − c)²·tr Σ1.
    rng = np.random.default_rng(4)
    a = rng.standard_normal((6, 6))
    sigma1 = a @ a.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = ((mu1 - mu2) ** 2).sum() + (1 - 3.0) ** 2 * np.trace(sigma1)
    assert abs(frechet_distance(mu1, sigma1, mu2, 9.0 * sigma1) - expected) < 1e-6


def test_gaussian_samples_approach_the_closed_form():
    # Feature statistics of many samples from two known Gaussians give the closed form within sampling error.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((200_000, 2)) * [1.0, 2.0]
    y = rng.standard_normal((200_000, 2)) * [3.0, 2.0] + [1.0, 0.0]
    expected = 1.0 + (1.0 - 3.0) ** 2
    assert frechet_distance(*feature_statistics(x), *feature_statistics(y)) == pytest.approx(expected, abs=0.05)
