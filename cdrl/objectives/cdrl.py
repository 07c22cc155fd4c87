"""Cooperative Diffusion Recovery Likelihood (Zhu et al., ICLR 2024): one training step's losses.

docs/algorithm.md §2 (shared-noise pairs, recovery-likelihood EBM loss), §3 (Langevin), §4 (initializer
proposal and its loss on the refined samples), §6 (order of operations), §8 (label dropout).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from cdrl.health import per_level_max
from cdrl.langevin import langevin_refine
from cdrl.nets.precision import float32_region
from cdrl.objectives.base import ObjectiveOutput, spectral_norm_power_step, unwrap
from cdrl.perf import EnergyCall, plain_energy
from cdrl.schedule import LevelTable


def per_level_mean(values: torch.Tensor, t: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Mean of ``values`` per transition t = 1..K (NaN where a level has no example): shape (K,)."""
    sums = torch.zeros(num_levels + 1, device=values.device).index_add_(0, t, values.float())
    counts = torch.zeros(num_levels + 1, device=values.device).index_add_(0, t, torch.ones_like(values, dtype=torch.float))
    return (sums / counts)[1:]


def view_per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


class CooperativeRecoveryLikelihood:
    """Losses of one CDRL iteration for ``energy_net`` (EBM) and ``initializer``.

    1. Draw t ~ U{1..K} per example and the pair (x_t, x_{t-1}) with one shared ε (§2).
    2. Proposal y⁰ = g_φ(x_t, λ_t) + sqrt(m_t β̃_t)·ξ′ (§4), refined by Langevin on the current EBM (§3).
    3. L_EBM = mean w_t·(F(y⁻) − F(y⁺)) with y⁺ = sqrt(m_t)·x_{t-1} (§2);
       L_init = mean ‖sg(y⁻) − y⁰‖² summed over dimensions (§4).
    Positive and negative energies share one forward, in float32 under mixed precision (cdrl/nets/precision.py);
    spectral norm steps once per call (§6).
    """

    network_names = ("energy_net", "initializer")

    def __init__(self, levels: LevelTable, num_langevin_steps: int, label_dropout: float = 0.0,
                 energy_call: EnergyCall = plain_energy):
        self.levels = levels
        self.num_langevin_steps = num_langevin_steps
        self.label_dropout = label_dropout
        self.energy_call = energy_call  # F(y) inside Langevin: plain or torch.compile'd (cdrl/perf.py)

    def net_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Dataset labels 0..C-1 → net labels 1..C, each replaced by the null label 0 with p_cond (§8)."""
        if labels is None:
            return None
        net_labels = labels.long() + 1
        if self.label_dropout > 0:
            dropped = torch.rand(net_labels.shape, device=net_labels.device) < self.label_dropout
            net_labels = net_labels.masked_fill(dropped, 0)
        return net_labels

    def __call__(self, nets: Mapping[str, nn.Module], x: torch.Tensor, labels: torch.Tensor | None) -> ObjectiveOutput:
        energy_net, initializer = nets["energy_net"], nets["initializer"]
        lv = self.levels
        K = lv.num_levels
        batch = x.shape[0]
        t = torch.randint(1, K + 1, (batch,), device=x.device)
        c = self.net_labels(labels)

        noise = torch.randn_like(x)
        at = lambda table, idx: view_per_example(table[idx], x)  # noqa: E731
        x_t = at(lv.sqrt_alpha_bar, t) * x + at(lv.sigma_bar, t) * noise
        x_prev = at(lv.sqrt_alpha_bar, t - 1) * x + at(lv.sigma_bar, t - 1) * noise
        scale = at(lv.scale, t)
        logsnr_t, logsnr_prev = lv.logsnr[t], lv.logsnr[t - 1]

        spectral_norm_power_step(energy_net)  # the EBM stays in eval mode for Langevin and the loss
        initializer.train()
        proposal = initializer(x_t, logsnr_t, c) + at(lv.init_noise_std, t) * torch.randn_like(x)

        plain_energy_net = unwrap(energy_net)
        condition = plain_energy_net.condition(logsnr_prev, c)
        refined = langevin_refine(
            lambda y: self.energy_call(plain_energy_net, y, condition),
            proposal.detach(),
            anchor=x_t,
            step_size=lv.step_size[t],
            quadratic_coeff=lv.quadratic_coeff[t],
            num_steps=self.num_langevin_steps,
            step_multiplier=lv.step_multiplier,
        )
        # Back to x_{t-1} and into y-space again, as the official code does (§12.4).
        y_negative = scale * (refined / (scale + 1e-8))
        y_positive = scale * x_prev

        both_labels = None if c is None else torch.cat([c, c])
        with float32_region(x):  # F(y⁻) − F(y⁺) is a small difference of large energies
            energies = energy_net(torch.cat([y_positive, y_negative]).float(), torch.cat([logsnr_prev, logsnr_prev]),
                                  both_labels)
        energy_positive, energy_negative = energies[:batch], energies[batch:]
        weight = lv.loss_weight[t]
        energy_loss = (weight * (energy_negative - energy_positive)).mean()
        initializer_loss = (y_negative - proposal).pow(2).flatten(1).sum(1).mean()

        with torch.no_grad():
            displacement = (refined - proposal).flatten(1).norm(dim=1)
            metrics = {
                "energy_loss": energy_loss.detach(),
                "initializer_loss": initializer_loss.detach(),
                "energy_positive": per_level_mean(energy_positive, t, K),
                "energy_negative": per_level_mean(energy_negative, t, K),
                "langevin_displacement": per_level_mean(displacement, t, K),
            }
            health = {
                "energy": per_level_max(torch.cat([energy_positive, energy_negative]), torch.cat([t, t]), K),
                "langevin_displacement": per_level_max(displacement, t, K),
            }
        return ObjectiveOutput(losses={"energy_net": energy_loss, "initializer": initializer_loss}, metrics=metrics,
                               health=health)
