"""Score matching of an energy-parametrised score s(x) = ∇ₓF(x): exact (Hyvärinen 2005, "Estimation of
Non-Normalized Statistical Models by Score Matching"), sliced (Song et al. 2019, "Sliced Score Matching",
variance-reduced form with Rademacher projections), denoising (Vincent 2011, "A Connection Between Score
Matching and Denoising Autoencoders") and multi-scale denoising (Song & Ermon 2019, "Generative Modeling by
Estimating Gradients of the Data Distribution", NCSN).

The single-scale methods use the energy net at the cleanest level λ_0; multi-scale DSM feeds the net the
logSNR of its variance-exploding noise level σ, λ = −2·log σ.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from cdrl.config import ScoreMatchingConfig
from cdrl.objectives.base import ObjectiveOutput, spectral_norm_power_step
from cdrl.objectives.mcmc import clean_logsnr
from cdrl.schedule import LevelTable


def score_of(energy_net: nn.Module, x: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    """∇ₓF(x, λ) with the graph kept (create_graph) so that a loss on it trains the net."""
    x = x.detach().requires_grad_(True) if not x.requires_grad else x
    (score,) = torch.autograd.grad(energy_net(x, logsnr, None).sum(), x, create_graph=True)
    return score


EXACT_MAX_DIMS = 16  # the trace costs one double-backward pass per dimension


def exact_score_matching_loss(energy_net: nn.Module, x: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    """mean[½‖s(x)‖² + tr ∇ₓs(x)], the trace by one backward pass per dimension (low dimensions only)."""
    dims = x[0].numel()
    if dims > EXACT_MAX_DIMS:
        raise ValueError(f"method exact_sm: the data has {dims} dimensions, exact score matching is for at most "
                         f"{EXACT_MAX_DIMS} (one backward pass per dimension); use sliced_sm or dsm")
    x = x.detach().requires_grad_(True)
    score = score_of(energy_net, x, logsnr).flatten(1)
    trace = torch.zeros(len(x), device=x.device)
    for i in range(score.shape[1]):
        (row,) = torch.autograd.grad(score[:, i].sum(), x, create_graph=True)
        trace = trace + row.flatten(1)[:, i]
    return (0.5 * score.pow(2).sum(1) + trace).mean()


def sliced_score_matching_loss(energy_net: nn.Module, x: torch.Tensor, logsnr: torch.Tensor,
                               num_projections: int = 1) -> torch.Tensor:
    """mean[½‖s(x)‖² + vᵀ∇ₓ(vᵀs(x))], v Rademacher (E[vvᵀ] = I, so its expectation is the exact loss)."""
    x = x.detach().repeat(num_projections, *([1] * (x.dim() - 1))).requires_grad_(True)
    logsnr = logsnr.repeat(num_projections)
    score = score_of(energy_net, x, logsnr)
    v = torch.randint(0, 2, x.shape, device=x.device, dtype=x.dtype) * 2 - 1
    (hessian_v,) = torch.autograd.grad((score * v).sum(), x, create_graph=True)
    return (0.5 * score.flatten(1).pow(2).sum(1) + (hessian_v * v).flatten(1).sum(1)).mean()


def denoising_score_matching_loss(energy_net: nn.Module, x: torch.Tensor, logsnr: torch.Tensor,
                                  sigma: torch.Tensor) -> torch.Tensor:
    """mean ½‖σ·s(x + σε) + ε‖² (= σ²·½‖s(x̃) − ∇ log N(x̃; x, σ²)‖²); ``sigma`` per example."""
    sigma = sigma.view(-1, *([1] * (x.dim() - 1)))
    noise = torch.randn_like(x)
    score = score_of(energy_net, x + sigma * noise, logsnr)
    return 0.5 * (sigma * score + noise).flatten(1).pow(2).sum(1).mean()


def noise_levels(settings: ScoreMatchingConfig) -> list[float]:
    """σ_max … σ_min, geometric (Song & Ermon 2019 §4.2), largest first."""
    n, hi, lo = settings.num_scales, settings.sigma_max, settings.sigma_min
    return [hi * (lo / hi) ** (i / max(n - 1, 1)) for i in range(n)]


def sigma_to_logsnr(sigma: torch.Tensor) -> torch.Tensor:
    """Variance-exploding noise x + σε has SNR 1/σ²: λ = −2·log σ."""
    return -2.0 * torch.log(sigma)


class ScoreMatching:
    """Losses for ``energy_net``: ``variant`` is "exact", "sliced", "dsm" or "multiscale_dsm"."""

    network_names = ("energy_net",)

    def __init__(self, levels: LevelTable, settings: ScoreMatchingConfig, variant: str):
        if variant not in ("exact", "sliced", "dsm", "multiscale_dsm"):
            raise ValueError(f"unknown score matching variant {variant!r}")
        self.levels, self.settings, self.variant = levels, settings, variant

    def __call__(self, nets: Mapping[str, nn.Module], x: torch.Tensor, labels: torch.Tensor | None) -> ObjectiveOutput:
        energy_net, s = nets["energy_net"], self.settings
        batch = x.shape[0]
        spectral_norm_power_step(energy_net)
        logsnr = clean_logsnr(self.levels, batch)
        if self.variant == "exact":
            loss = exact_score_matching_loss(energy_net, x, logsnr)
        elif self.variant == "sliced":
            loss = sliced_score_matching_loss(energy_net, x, logsnr, s.num_projections)
        elif self.variant == "dsm":
            loss = denoising_score_matching_loss(energy_net, x, logsnr, torch.full((batch,), s.noise_std, device=x.device))
        else:
            sigmas = torch.tensor(noise_levels(s), device=x.device, dtype=x.dtype)
            sigma = sigmas[torch.randint(0, len(sigmas), (batch,), device=x.device)]
            loss = denoising_score_matching_loss(energy_net, x, sigma_to_logsnr(sigma), sigma)
        return ObjectiveOutput(losses={"energy_net": loss}, metrics={"score_matching_loss": loss.detach()})
