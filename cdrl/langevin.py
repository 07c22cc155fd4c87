"""Langevin refinement of initializer proposals (docs/algorithm.md §3).

For each example at transition t, with y⁰ the initializer proposal and x_t the noisy observation:

    E(y) = F(y) − c_t·‖y − x_t‖²          (c_t = c0·κ_t, and 0 at the final transition t = K)
    y ← y + ½·sz_mul²·∇_y E(y) + s_t·ξ    (N steps, noise also at the last step, no MH correction)

so the chain targets p(y | x_t) ∝ exp(F(y)/s_t² − ‖y − x_t‖²/(2σ_t²)). Examples of different levels
share one batch: ``step_size`` and ``quadratic_coeff`` are per-example vectors.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.nn.utils import parametrize

EnergyFn = Callable[[torch.Tensor], torch.Tensor]
Projection = Callable[[torch.Tensor, int], torch.Tensor]


def standard_normal_like(y: torch.Tensor) -> torch.Tensor:
    """N(0, I) of y's shape with values in logical order whatever y's memory format (``randn_like`` fills a
    channels_last tensor in memory order, which would change the chain when perf.channels_last is on)."""
    return torch.randn(y.shape, device=y.device, dtype=y.dtype)


def _per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def langevin_refine(
    energy: EnergyFn,
    y: torch.Tensor,
    anchor: torch.Tensor,
    step_size: torch.Tensor,
    quadratic_coeff: torch.Tensor,
    num_steps: int,
    step_multiplier: float = 1.0,
    project: Projection | None = None,
    final_step_noise: bool = True,
) -> torch.Tensor:
    """Run ``num_steps`` Langevin steps on ``y`` (detached) and return the last iterate (detached).

    ``energy`` maps y to F(y) per example; its x-independent work (time embedding) should already be
    done by the caller, once per chain. ``project(y, k)``, if given, is applied after every step
    (used by inpainting to overwrite known pixels). Spectral-norm weights are computed once per chain.
    y, the recovery term and the update stay float32 under autocast (only F's matmuls run in bf16).
    ``final_step_noise=False`` makes the last step a pure gradient step (a sampling option, not §3).
    """
    s = _per_example(step_size, y)
    c = _per_example(quadratic_coeff, y)
    drift = 0.5 * step_multiplier**2
    y = y.detach()
    with torch.enable_grad(), parametrize.cached():
        for k in range(num_steps):
            y = y.requires_grad_(True)
            recovery = (c * (y - anchor).pow(2)).flatten(1).sum(1)
            total = (energy(y).float() - recovery).sum()  # float32 even when F ran under bf16 autocast
            (grad,) = torch.autograd.grad(total, y)
            noise = s * standard_normal_like(y) if final_step_noise or k < num_steps - 1 else 0.0
            y = (y + drift * grad + noise).detach()
            if project is not None:
                y = project(y, k)
    return y
