"""Out-of-distribution detection with a trained EBM (§8): energy scores and AUROC against named OOD sets.

Scores are log-densities up to a constant (higher: more in-distribution): ``clean`` is F at the cleanest
level (cdrl.generation.energy_score); ``summed`` adds, over every transition t, F(sqrt(m_t)·x_{t-1}, λ_{t-1})/s_t²
at the forward-noised x_{t-1} = sqrt(ā_{t-1})·x + σ̄_{t-1}·ε (one fixed ε per example).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cdrl.generation import energy_score
from cdrl.schedule import LevelTable

OOD_SETS = ("uniform_noise", "inverted_digits", "rotated_digits", "grayscale_patches")


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(score_in > score_out) + ½·P(tie): the area under the ROC curve of "in" (higher score) vs "out"."""
    scores = np.concatenate([in_scores, out_scores]).astype(np.float64)
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks for ties
    unique, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    n_in, n_out = len(in_scores), len(out_scores)
    return float((ranks[:n_in].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))


def summed_energy_score(energy_net: nn.Module, x: torch.Tensor, levels: LevelTable, seed: int = 0,
                        labels: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_t F(sqrt(m_t)·x_{t-1}, λ_{t-1})/s_t² over t = 1..K with a seeded forward noise."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    total = torch.zeros(len(x), device=x.device)
    with torch.no_grad():
        for t in range(1, levels.num_levels + 1):
            x_prev = levels.sqrt_alpha_bar[t - 1] * x + levels.sigma_bar[t - 1] * noise
            logsnr = levels.logsnr[t - 1].expand(len(x))
            total += energy_net(levels.scale[t] * x_prev, logsnr, labels) / levels.step_size[t] ** 2
    return total


def ood_scores(energy_net: nn.Module, x: torch.Tensor, levels: LevelTable, batch_size: int = 500) -> dict[str, np.ndarray]:
    """{"clean": …, "summed": …} per example, in batches."""
    clean, summed = [], []
    for i in range(0, len(x), batch_size):
        part = x[i:i + batch_size]
        clean.append(energy_score(energy_net, part, levels).cpu())
        summed.append(summed_energy_score(energy_net, part, levels, seed=i).cpu())
    return {"clean": torch.cat(clean).numpy(), "summed": torch.cat(summed).numpy()}


def digits_ood_sets(digits: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """The named OOD sets for 8×8 digits in [-1, 1], as many as ``digits``: uniform noise, inverted digits
    (−x), digits rotated 90°, and 8×8 grayscale patches of scikit-learn's sample photos (32×32 crops averaged
    over colour and 4×4 pixels)."""
    from cdrl.data.images import load_patches

    n = len(digits)
    generator = torch.Generator().manual_seed(seed)
    patches, _ = load_patches(num_patches=n, size=32, seed=seed)
    gray = F.avg_pool2d(torch.from_numpy(patches).mean(dim=1, keepdim=True), 4)
    return {
        "uniform_noise": torch.rand(digits.shape, generator=generator) * 2 - 1,
        "inverted_digits": -digits,
        "rotated_digits": torch.rot90(digits, 1, dims=(2, 3)),
        "grayscale_patches": gray.clamp(-1, 1),
    }


def ood_report(energy_net: nn.Module, held_out: torch.Tensor, levels: LevelTable, seed: int = 0) -> dict[str, float]:
    """``ood/auroc_{clean,summed}/SET`` of held-out in-distribution data vs each named OOD set."""
    reference = ood_scores(energy_net, held_out, levels)
    report = {}
    for name, x in digits_ood_sets(held_out, seed).items():
        scores = ood_scores(energy_net, x, levels)
        for kind in ("clean", "summed"):
            report[f"ood/auroc_{kind}/{name}"] = auroc(reference[kind], scores[kind])
    return report
