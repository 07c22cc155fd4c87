"""The Fréchet distance between Gaussians fitted to features: the formula behind FID (docs/algorithm.md §9).

FID applies it to InceptionV3 pool3 features, digits-FID to a digits classifier's features (both in
``cdrl.metrics.features``). scipy (a dependency of scikit-learn) provides the matrix square root; it is
imported on first use (a few tenths of a second that a training worker scoring 2-D toys never needs).
"""
from __future__ import annotations

import numpy as np

_IMAGINARY_TOLERANCE = 1e-3


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of ``features`` with shape (N, d), in float64 (§9)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must have shape (N >= 2, d), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], -1)


def _sqrtm_of_product(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> np.ndarray:
    """(Σ1 Σ2)^{1/2}; if it is not finite (near-singular covariances), retry with Σ + eps·I."""
    from scipy import linalg

    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(len(sigma1))
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        largest_imaginary = np.abs(covmean.imag).max()
        if largest_imaginary > _IMAGINARY_TOLERANCE:
            raise ValueError(f"matrix square root has a large imaginary part ({largest_imaginary:.3g})")
        covmean = covmean.real
    return covmean


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """d² = |μ1 − μ2|² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2}) between two Gaussians: the distance FID reports (§9).

    FID feeds it the ``feature_statistics`` of extracted features (``cdrl.metrics.features``).
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(mu, dtype=np.float64)) for mu in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(sigma, dtype=np.float64)) for sigma in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    covmean = _sqrtm_of_product(sigma1, sigma2, eps)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
