"""OOD detection (§8): AUROC of data vs itself ≈ 0.5 and vs noise ≈ 1; the named OOD sets; energy scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cdrl.config import load_config
from cdrl.data.images import load_digits
from cdrl.factory import build_levels
from cdrl.metrics.ood import OOD_SETS, auroc, digits_ood_sets, ood_report, ood_scores


def test_auroc_of_data_vs_itself_is_one_half_and_vs_shifted_data_is_one():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=4000), rng.normal(size=4000)
    assert auroc(a, b) == pytest.approx(0.5, abs=0.02)
    assert auroc(a, a) == pytest.approx(0.5, abs=1e-12)  # ties count one half
    assert auroc(a + 10, b) == 1.0 and auroc(a - 10, b) == 0.0
    assert auroc(np.array([3.0, 1.0]), np.array([2.0, 0.0])) == 0.75


def test_digits_vs_noise_auroc_is_near_one_with_a_density_that_fits_digits():
    digits = torch.from_numpy(load_digits()[0][:300])
    levels = build_levels(load_config(None, []))
    sets = digits_ood_sets(digits)
    assert set(sets) == set(OOD_SETS) and all(v.shape == digits.shape for v in sets.values())
    assert all(float(v.min()) >= -1 and float(v.max()) <= 1 for v in sets.values())
    # A Gaussian fitted to the digits scores held-out digits above uniform noise.
    flat = digits.flatten(1)
    mean, var = flat.mean(0), flat.var(0) + 1e-2

    class Fitted(nn.Module):
        def forward(self, y, logsnr, labels=None):
            return -0.5 * ((y.flatten(1) - mean).pow(2) / var).sum(1) * 1e-4

    report = ood_report(Fitted(), torch.from_numpy(load_digits()[0][300:600]), levels)
    assert report["ood/auroc_clean/uniform_noise"] > 0.95 and report["ood/auroc_summed/uniform_noise"] > 0.95
    same = ood_scores(Fitted(), digits, levels)
    half = auroc(same["clean"][:150], same["clean"][150:])
    assert half == pytest.approx(0.5, abs=0.12)
