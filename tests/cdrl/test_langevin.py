"""Langevin refinement (§3): stationary distribution, per-example step sizes, hoisted conditioning."""
from __future__ import annotations

import torch

from cdrl.langevin import langevin_refine


def test_samples_the_recovery_posterior_of_a_quadratic_energy():
    """F(y) = -a‖y‖²: the target exp(F/s² − ‖y−x‖²/(2σ²)) is Gaussian with known mean and variance."""
    torch.manual_seed(0)
    a, s, sigma = 0.01, 0.1, 0.5
    c = s**2 / (2 * sigma**2)
    x = torch.full((20000, 1), 2.0)
    y = langevin_refine(lambda y: -a * y.pow(2).sum(1), torch.zeros_like(x), x,
                        torch.full((20000,), s), torch.full((20000,), c), num_steps=400)
    precision = 2 * a / s**2 + 1 / sigma**2
    mean, var = (2.0 / sigma**2) / precision, 1 / precision
    # Unadjusted Langevin's bias at this step size is well below these tolerances.
    assert abs(y.mean().item() - mean) < 0.02
    assert abs(y.var().item() / var - 1) < 0.08


def test_final_level_has_no_recovery_term_and_levels_mix_in_one_batch():
    torch.manual_seed(0)
    x = torch.full((4000, 1), 3.0)
    step = torch.cat([torch.full((2000,), 0.05), torch.full((2000,), 0.2)])
    coeff = torch.cat([torch.full((2000,), 0.05), torch.zeros(2000)])  # second half: "final" level
    y = langevin_refine(lambda y: -0.5 * y.pow(2).sum(1), torch.zeros_like(x), x, step, coeff, num_steps=300)
    assert abs(y[2000:].mean().item()) < 0.05  # no pull towards x_t
    # F/s² − c‖y−3‖²/s² peaks at y = 3c/(0.5 + c): pulled towards x_t = 3.
    assert abs(y[:2000].mean().item() - 3 * 0.05 / 0.55) < 0.03


def test_zero_steps_is_identity_and_output_is_detached():
    y0 = torch.randn(5, 2, requires_grad=True)
    out = langevin_refine(lambda y: y.sum(1), y0, torch.zeros(5, 2), torch.ones(5), torch.ones(5), 0)
    assert torch.equal(out, y0.detach()) and not out.requires_grad


def test_energy_called_once_per_step_and_projection_applied():
    calls = []

    def energy(y):
        calls.append(1)
        return -y.pow(2).sum(1)

    mask = torch.tensor([[1.0, 0.0]])
    out = langevin_refine(energy, torch.zeros(3, 2), torch.zeros(3, 2), torch.full((3,), 0.1), torch.zeros(3), 7,
                          project=lambda y, k: mask * 5.0 + (1 - mask) * y)
    assert len(calls) == 7
    assert torch.all(out[:, 0] == 5.0)
