"""An EBM trained with a learned sampler: a generator q(x) = ∫ N(x; g(z), σ²I) p(z) dz trained to minimise
KL(q ‖ p_θ) = −E_q[F(x)] − H(q) + const, its negatives used for the EBM's maximum-likelihood gradient.

After VERA (Grathwohl et al. 2021, "No MCMC for me: Amortized sampling for fast and stable training of
energy-based models", §3): the entropy gradient is ∇_φ H(q) = −E_q[∇ₓ log q(x)ᵀ ∂x/∂φ], with the score
∇ₓ log q(x) = E_{q(z|x)}[(g(z) − x)/σ²]. VERA estimates the posterior expectation by importance sampling
from a learned posterior; here the proposal is the prior, through the batch's other latents (self-normalised
importance sampling, leave-one-out): consistent as the batch grows, no extra network.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from cdrl.config import LearnedSamplerConfig
from cdrl.nets.precision import float32_region
from cdrl.objectives.base import ObjectiveOutput, spectral_norm_power_step
from cdrl.objectives.mcmc import clean_energy_fn, clean_logsnr
from cdrl.schedule import LevelTable


def generator_score(x: torch.Tensor, means: torch.Tensor, std: float) -> torch.Tensor:
    """∇ₓ log q(x_i) ≈ Σ_{j≠i} w_ij (g(z_j) − x_i)/σ², w_ij ∝ N(x_i; g(z_j), σ²I) (leave-one-out)."""
    flat_x, flat_mu = x.flatten(1), means.flatten(1)
    log_w = -torch.cdist(flat_x, flat_mu).pow(2) / (2 * std**2)
    log_w.fill_diagonal_(float("-inf"))
    weights = torch.softmax(log_w, dim=1)
    return ((weights @ flat_mu - flat_x) / std**2).view_as(x)


class LearnedSamplerObjective:
    """Losses for ``energy_net`` and ``generator``.

    x = g(z) + σε. L_EBM = mean F(x) − mean F(x⁺) + α·mean(F(x⁺)² + F(x)²) on sg(x);
    L_gen has the gradient of −E[F(x)] − λ·H(q): (−∇ₓF(x) + λ·∇ₓ log q(x))ᵀ x with both vectors detached
    (∇ₓF through the plain EBM, so the generator loss puts no gradient on the EBM).
    """

    network_names = ("energy_net", "generator")

    def __init__(self, levels: LevelTable, settings: LearnedSamplerConfig):
        self.levels = levels
        self.settings = settings

    def __call__(self, nets: Mapping[str, nn.Module], x: torch.Tensor, labels: torch.Tensor | None) -> ObjectiveOutput:
        energy_net, generator, s = nets["energy_net"], nets["generator"], self.settings
        batch = x.shape[0]
        spectral_norm_power_step(energy_net)
        generator.train()
        means = generator(torch.randn(batch, s.latent_dim, device=x.device))
        fake = means + s.output_std * torch.randn_like(means)
        with float32_region(x):  # a contrastive loss: a small difference of large energies
            energies = energy_net(torch.cat([x, fake.detach()]).float(), clean_logsnr(self.levels, 2 * batch), None)
        positive, negative = energies[:batch], energies[batch:]
        energy_loss = negative.mean() - positive.mean() + s.energy_reg * (positive.pow(2) + negative.pow(2)).mean()

        with torch.enable_grad():
            probe = fake.detach().requires_grad_(True)
            (energy_grad,) = torch.autograd.grad(clean_energy_fn(energy_net, self.levels, batch)(probe).sum(), probe)
        score = generator_score(fake.detach(), means.detach(), s.output_std)
        direction = (-energy_grad + s.entropy_weight * score).detach()
        generator_loss = (direction * fake).flatten(1).sum(1).mean()
        metrics = {"energy_positive": positive.detach().mean(), "energy_negative": negative.detach().mean(),
                   "generator_score_norm": score.flatten(1).norm(dim=1).mean()}
        return ObjectiveOutput(losses={"energy_net": energy_loss, "generator": generator_loss}, metrics=metrics)
