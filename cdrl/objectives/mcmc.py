"""Maximum likelihood with MCMC negatives: persistent chains from a replay buffer (Du & Mordatch 2019,
"Implicit Generation and Generalization in Energy-Based Models"; Grathwohl et al. 2020, "Your Classifier is
Secretly an Energy Based Model", JEM) or short-run chains from noise (Nijkamp et al. 2019, "Learning
Non-Convergent Non-Persistent Short-Run MCMC Toward Energy-Based Model"), SGLD or MALA steps.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from cdrl.config import MCMCConfig
from cdrl.nets.precision import float32_region
from cdrl.objectives.base import ObjectiveOutput, spectral_norm_power_step, unwrap
from cdrl.objectives.replay_buffer import ReplayBuffer
from cdrl.schedule import LevelTable
from cdrl.sgld import sgld


def clean_energy_fn(energy_net: nn.Module, levels: LevelTable, batch: int):
    """x ↦ F(x, λ_0): the noise-conditional net used at the cleanest level as a plain energy F(x)."""
    plain = unwrap(energy_net)
    condition = plain.condition(levels.logsnr[0].expand(batch), None)
    return lambda x: plain.energy(x, condition)


def clean_logsnr(levels: LevelTable, batch: int) -> torch.Tensor:
    return levels.logsnr[0].expand(batch)


class MaximumLikelihoodMCMC:
    """∇ log p(x) = ∇F(x⁺) − E_p[∇F(x⁻)], with x⁻ from ``num_steps`` SGLD/MALA steps.

    L = mean F(x⁻) − mean F(x⁺) + α·mean(F(x⁺)² + F(x⁻)²). Persistent: chains start from the worker's
    replay buffer, each restarting from uniform noise with ``reinit_prob``, and return to it. Short-run:
    every chain starts from uniform noise.
    """

    network_names = ("energy_net",)

    def __init__(self, levels: LevelTable, settings: MCMCConfig):
        self.levels = levels
        self.settings = settings
        self.buffer = ReplayBuffer(settings.buffer_size, settings.reinit_prob, settings.init_range) if settings.persistent else None

    def __call__(self, nets: Mapping[str, nn.Module], x: torch.Tensor, labels: torch.Tensor | None) -> ObjectiveOutput:
        energy_net, s = nets["energy_net"], self.settings
        batch, shape = x.shape[0], tuple(x.shape[1:])
        spectral_norm_power_step(energy_net)
        if self.buffer is not None:
            starts, slots = self.buffer.draw(batch, shape, x.device)
        else:
            starts = (torch.rand_like(x) * 2 - 1) * s.init_range
        negatives, acceptance = sgld(clean_energy_fn(energy_net, self.levels, batch), starts, s.num_steps,
                                     s.step_size, s.noise_std, mala=s.mala)
        if self.buffer is not None:
            self.buffer.store(slots, negatives)
        with float32_region(x):  # a contrastive loss: a small difference of large energies
            energies = energy_net(torch.cat([x, negatives]).float(), clean_logsnr(self.levels, 2 * batch), None)
        positive, negative = energies[:batch], energies[batch:]
        loss = negative.mean() - positive.mean() + s.energy_reg * (positive.pow(2) + negative.pow(2)).mean()
        metrics = {"energy_positive": positive.detach().mean(), "energy_negative": negative.detach().mean(),
                   "mcmc_acceptance": torch.tensor(acceptance)}
        return ObjectiveOutput(losses={"energy_net": loss}, metrics=metrics)

    def state_dict(self) -> dict:
        return {"replay_buffer": self.buffer.state_dict()} if self.buffer is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.buffer is not None and "replay_buffer" in state:
            self.buffer.load_state_dict(state["replay_buffer"])
