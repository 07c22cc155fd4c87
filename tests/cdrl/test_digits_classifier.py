"""The digits classifier behind digits-FID: deterministic, cached, accurate, and a discriminating feature."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cdrl.metrics.digits_classifier import digits_split, load_digits_classifier
from cdrl.metrics.features import DigitsFeatures, extract_features
from cdrl.metrics.frechet import feature_statistics, frechet_distance


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cdrl_cache")


def test_trained_once_then_loaded_from_the_cache(cache_dir):
    """A fresh cache trains; the user cache (trained by whichever process came first) holds the same weights."""
    first = load_digits_classifier(cache_dir)
    files = list(cache_dir.glob("digits_classifier-*.pt"))
    assert len(files) == 1 and first.fingerprint.removeprefix("digits-") in files[0].name
    assert first.held_out_accuracy > 0.95
    for again in (load_digits_classifier(cache_dir), load_digits_classifier()):
        assert again.held_out_accuracy == first.held_out_accuracy and again.fingerprint == first.fingerprint
        for a, b in zip(first.state_dict().values(), again.state_dict().values()):
            assert torch.equal(a, b)
    x = torch.from_numpy(digits_split()["held_out_x"][:5])
    assert first(x).shape == (5, 10) and first.features(x).shape == (5, 128)
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        first.features(torch.zeros(2, 3, 8, 8))


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_digits_fid_of_real_digits_is_far_below_noise_blur_and_shuffles(cache_dir):
    extractor = DigitsFeatures(cache_dir)
    split = digits_split()
    reference = feature_statistics(extract_features(extractor, split["train_x"]))

    def fid(images) -> float:
        return frechet_distance(*feature_statistics(extract_features(extractor, images)), *reference)

    held_out = torch.from_numpy(split["held_out_x"])
    generator = torch.Generator().manual_seed(0)
    blur = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    others = {
        "noise": torch.rand(held_out.shape, generator=generator) * 2 - 1,
        "blurred": F.conv2d(F.pad(held_out, [1] * 4, value=-1.0), blur[None, None]),
        "shuffled": held_out.reshape(len(held_out), -1)[:, torch.randperm(64, generator=generator)].reshape(held_out.shape),
    }
    real = fid(held_out)
    assert np.isfinite(real)
    for name, images in others.items():
        assert fid(images) > 10 * real, name
