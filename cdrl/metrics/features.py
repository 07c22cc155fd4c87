"""Feature extractors behind one interface, for Fréchet distances between sample sets (docs/algorithm.md §9).

``inception``: FID's InceptionV3 pool3 (2048-d), for RGB images (grey images repeated to 3 channels).
``digits``: the penultimate layer (128-d) of a CNN trained on scikit-learn's 8×8 digits ("digits-FID").
Every extractor takes images in model space [-1, 1], shape (N, C, H, W), and returns float32 (N, dim).
2-D toy data has no extractor: it keeps the toy metrics (``cdrl.metrics.toy``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

EXTRACTORS = ("inception", "digits")


@runtime_checkable
class FeatureExtractor(Protocol):
    """``name`` as in metric names (``fid/NAME_N``), ``dim`` features per image, ``fingerprint`` naming the
    exact weights (reference statistics from other weights are never reused)."""

    name: str
    dim: int
    fingerprint: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] → (N, dim) float32, on the images' device or the CPU."""
        ...


class DigitsFeatures:
    """The ``digits`` extractor: penultimate features of the cached digits classifier."""

    name = "digits"

    def __init__(self, cache_dir: str | Path | None = None, device: torch.device | str = "cpu") -> None:
        from cdrl.metrics.digits_classifier import FEATURE_DIM, load_digits_classifier

        self.classifier = load_digits_classifier(cache_dir).to(device)
        self.device = torch.device(device)
        self.dim = FEATURE_DIM
        self.fingerprint = self.classifier.fingerprint

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.to(self.device, torch.float32)).float()


def build_extractor(name: str, *, inception_weights: str | None = None, cache_dir: str | Path | None = None,
                    device: torch.device | str = "cpu") -> FeatureExtractor:
    """The extractor called ``name``; ValueError for unknown names, FileNotFoundError for missing weights."""
    if name == "inception":
        from cdrl.metrics.inception import InceptionExtractor

        return InceptionExtractor(inception_weights, device)
    if name == "digits":
        return DigitsFeatures(cache_dir, device)
    raise ValueError(f"eval.extractor: unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


def default_extractor(data_shape: tuple[int, ...], dataset: str) -> str | None:
    """``digits`` for 1×8×8 digits, ``inception`` for other images, None for non-image (toy) data."""
    if len(data_shape) != 3:
        return None
    if dataset == "digits" or tuple(data_shape) == (1, 8, 8):
        return "digits"
    return "inception"


@torch.no_grad()
def extract_features(extractor: FeatureExtractor, images: torch.Tensor | np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Features of all ``images`` in batches, as a float64 array (N, dim) on the CPU."""
    images = torch.as_tensor(images)
    parts = [extractor(images[start:start + batch_size]).detach().cpu().double()
             for start in range(0, len(images), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, extractor.dim))
