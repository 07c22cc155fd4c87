"""Diffusion Recovery Likelihood (Gao et al., ICLR 2021, "Learning Energy-Based Models by Diffusion Recovery
Likelihood"): CDRL's recovery-likelihood loss with each chain started at the noisy observation itself,
y⁰ = x_t, and no initializer network (docs/algorithm.md §14). DRL's step sizes are the "image" step rule
with c0 = b²/2 = 1e-4 and its chains 30 steps long (pipeline/configs/drl_*.yaml).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import torch
from torch import nn

from cdrl.objectives.base import ObjectiveOutput
from cdrl.objectives.cdrl import CooperativeRecoveryLikelihood
from cdrl.schedule import LevelTable


class NoisyObservation(nn.Module):
    """DRL's "initializer": the chain starts at x_t (an identity map with no parameters)."""

    def forward(self, x_t: torch.Tensor, logsnr: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return x_t


def without_initializer_noise(levels: LevelTable) -> LevelTable:
    """The table with the initializer's proposal noise switched off (DRL starts exactly at x_t)."""
    return dataclasses.replace(levels, init_noise_std=torch.zeros_like(levels.init_noise_std))


class DiffusionRecoveryLikelihood:
    """Loss for ``energy_net`` only: CDRL's EBM loss (§2, §3) with y⁰ = x_t."""

    network_names = ("energy_net",)

    def __init__(self, levels: LevelTable, num_langevin_steps: int, label_dropout: float = 0.0):
        self.levels = levels
        self.recovery = CooperativeRecoveryLikelihood(without_initializer_noise(levels), num_langevin_steps, label_dropout)
        self.start = NoisyObservation()

    def __call__(self, nets: Mapping[str, nn.Module], x: torch.Tensor, labels: torch.Tensor | None) -> ObjectiveOutput:
        out = self.recovery({"energy_net": nets["energy_net"], "initializer": self.start}, x, labels)
        metrics = {k: v for k, v in out.metrics.items() if k != "initializer_loss"}
        return ObjectiveOutput(losses={"energy_net": out.losses["energy_net"]}, metrics=metrics)
