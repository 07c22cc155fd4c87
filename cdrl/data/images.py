"""Small image datasets that ship inside scikit-learn, scaled to [-1, 1] in NCHW float32."""
from __future__ import annotations

import numpy as np


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8×8 handwritten digits: (N, 1, 8, 8) in [-1, 1] and int64 class labels 0..9."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32) / 16.0 * 2.0 - 1.0
    return images[:, None, :, :], bunch.target.astype(np.int64)


def load_patches(num_patches: int = 10_000, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random size×size RGB crops of scikit-learn's sample photos: (N, 3, size, size) in [-1, 1].

    Labels are the index of the source photo. Crops are drawn uniformly with a fixed seed.
    """
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(img, dtype=np.float32) / 127.5 - 1.0 for img in load_sample_images().images]
    rng = np.random.default_rng(seed)
    source = rng.integers(0, len(photos), size=num_patches)
    out = np.empty((num_patches, 3, size, size), dtype=np.float32)
    for i, k in enumerate(source):
        photo = photos[k]
        top = rng.integers(0, photo.shape[0] - size + 1)
        left = rng.integers(0, photo.shape[1] - size + 1)
        out[i] = photo[top : top + size, left : left + size].transpose(2, 0, 1)
    return out, source.astype(np.int64)
