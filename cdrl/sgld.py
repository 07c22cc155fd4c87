"""Langevin chains on an energy F(x) with density ∝ exp(F(x)): SGLD, MALA and annealed Langevin.

Used by the classic EBM methods (cdrl/objectives/mcmc.py, score_matching.py) in training and sampling.
CDRL's recovery-likelihood chain is cdrl/langevin.py.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.nn.utils import parametrize

EnergyFn = Callable[[torch.Tensor], torch.Tensor]  # x ↦ F(x) per example, shape (B,)


def _energy_and_grad(energy: EnergyFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    f = energy(x)
    (grad,) = torch.autograd.grad(f.sum(), x)
    return f.detach(), grad


def sgld(energy: EnergyFn, x: torch.Tensor, num_steps: int, step_size: float, noise_std: float,
         mala: bool = False, final_step_noise: bool = True) -> tuple[torch.Tensor, float]:
    """Run ``num_steps`` steps from ``x``; returns (x, acceptance rate).

    SGLD (Welling & Teh 2011, with the step and noise decoupled as in Du & Mordatch 2019):
        x ← x + step_size·∇F(x) + noise_std·ξ.
    MALA (Roberts & Tweedie 1996): proposal x' = x + ε·∇F(x) + sqrt(2ε)·ξ with ε = step_size, accepted
    with probability min(1, exp(F(x') − F(x)) q(x|x')/q(x'|x)); ``noise_std`` is then unused.
    ``final_step_noise=False`` makes the last SGLD step a gradient step. Acceptance is 1.0 for SGLD.
    """
    x = x.detach()
    accepted, proposed = 0.0, 0
    with torch.enable_grad(), parametrize.cached():
        f, grad = _energy_and_grad(energy, x)
        for k in range(num_steps):
            if not mala:
                noise = noise_std * torch.randn_like(x) if final_step_noise or k < num_steps - 1 else 0.0
                x = (x + step_size * grad + noise).detach()
                if k < num_steps - 1:
                    f, grad = _energy_and_grad(energy, x)
                continue
            xi = torch.randn_like(x)
            proposal = (x + step_size * grad + math.sqrt(2 * step_size) * xi).detach()
            f_new, grad_new = _energy_and_grad(energy, proposal)
            backward = (x - proposal - step_size * grad_new).pow(2).flatten(1).sum(1) / (4 * step_size)
            forward = xi.pow(2).flatten(1).sum(1) / 2
            log_ratio = f_new - f - backward + forward
            accept = torch.rand_like(log_ratio).log() < log_ratio
            shape = (-1,) + (1,) * (x.dim() - 1)
            x = torch.where(accept.view(shape), proposal, x)
            f = torch.where(accept, f_new, f)
            grad = torch.where(accept.view(shape), grad_new, grad)
            accepted += float(accept.float().mean())
            proposed += 1
    return x.detach(), (accepted / proposed if proposed else 1.0)


def annealed_langevin(score_energy: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor,
                      sigmas: list[float], steps_per_scale: int, step_size: float,
                      final_step_noise: bool = True) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) from the largest σ to the smallest.

    At scale σ_i: α_i = step_size·σ_i²/σ_L², then T steps x ← x + (α_i/2)·∇ₓF(x, σ_i) + sqrt(α_i)·ξ.
    ``score_energy(x, σ)`` is F(x, σ) per example.
    """
    x = x.detach()
    last = sigmas[-1]
    with torch.enable_grad(), parametrize.cached():
        for i, sigma in enumerate(sigmas):
            alpha = step_size * (sigma / last) ** 2
            for k in range(steps_per_scale):
                _, grad = _energy_and_grad(lambda y: score_energy(y, sigma), x)
                final = i == len(sigmas) - 1 and k == steps_per_scale - 1
                noise = math.sqrt(alpha) * torch.randn_like(x) if final_step_noise or not final else 0.0
                x = (x + 0.5 * alpha * grad + noise).detach()
    return x
