"""The noise schedule: every per-level constant of CDRL in one place.

Spec: cdrl-algorithm.md §1 (truncated cosine logSNR), §2 (pairs, loss weights), §3 (Langevin step
sizes), §4 (initializer noise), §10 (reference values). Level 0 is the cleanest level (logSNR = max),
level K the noisiest. Transition t in 1..K goes from level t to level t-1; arrays indexed by t keep a
placeholder at index 0 so that ``schedule.sigma[t]`` reads like the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

StepRule = Literal["toy", "image"]


def cosine_logsnr(u: torch.Tensor, logsnr_min: float, logsnr_max: float) -> torch.Tensor:
    """λ(u) = -2 log tan(a·u + b), with λ(0) = logsnr_max and λ(1) = logsnr_min (§1)."""
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    return -2.0 * torch.log(torch.tan(a * u + b))


def logsnr_to_time_input(logsnr: torch.Tensor) -> torch.Tensor:
    """u_emb(λ) = arctan(exp(-clip(λ,-20,20)/2)) / (π/2) ∈ (0, 1): the networks' time input (§1)."""
    return torch.atan(torch.exp(-0.5 * logsnr.clamp(-20.0, 20.0))) / (0.5 * math.pi)


@dataclass(frozen=True)
class LangevinConstants:
    """Per-transition Langevin constants (§3): noise std s_t and the recovery coefficient c_t."""

    step_size: torch.Tensor  # s_t, index 0 unused
    quadratic_coeff: torch.Tensor  # c_t = c0·κ_t·(1 - is_final); 0 at t = K


@dataclass(frozen=True)
class LevelTable:
    """Per-level tensors on the compute device (index = level i for λ, ā, σ̄; transition t otherwise)."""

    num_levels: int
    logsnr: torch.Tensor  # λ_i
    sqrt_alpha_bar: torch.Tensor  # sqrt(ā_i)
    sigma_bar: torch.Tensor  # σ̄_i
    scale: torch.Tensor  # sqrt(m_t): y = scale·x_{t-1}
    init_noise_std: torch.Tensor  # sqrt(m_t·β̃_t)
    loss_weight: torch.Tensor  # w_t
    step_size: torch.Tensor  # s_t
    quadratic_coeff: torch.Tensor  # c0·κ_t, 0 at t = K
    step_multiplier: float


class NoiseSchedule:
    """Truncated cosine logSNR schedule with ``num_levels`` = K levels above the data (§1, §10).

    All tensors are float64 on the CPU; ``to(device, dtype)`` gives a copy for the hot path.
    """

    def __init__(self, num_levels: int = 6, logsnr_min: float = -5.1, logsnr_max: float = 9.8):
        if num_levels < 1:
            raise ValueError(f"schedule.num_levels must be >= 1, got {num_levels}")
        if not logsnr_min < logsnr_max:
            raise ValueError(f"schedule.logsnr_min ({logsnr_min}) must be < schedule.logsnr_max ({logsnr_max})")
        self.num_levels = num_levels
        self.logsnr_min = float(logsnr_min)
        self.logsnr_max = float(logsnr_max)
        K = num_levels
        u = torch.arange(K + 1, dtype=torch.float64) / K
        self.logsnr = cosine_logsnr(u, logsnr_min, logsnr_max)  # λ_i, i = 0..K
        self.alpha_bar = torch.sigmoid(self.logsnr)  # ā_i
        self.sigma_bar = torch.sigmoid(-self.logsnr).sqrt()  # σ̄_i
        self.time_input = logsnr_to_time_input(self.logsnr)  # u_emb(λ_i), before ×1000

        nan = torch.tensor([float("nan")], dtype=torch.float64)
        alpha = self.alpha_bar[1:] / self.alpha_bar[:-1]
        beta = 1.0 - alpha
        self.alpha = torch.cat([nan, alpha])  # α_t
        self.beta = torch.cat([nan, beta])  # β_t
        self.sigma = self.beta.sqrt()  # σ_t
        self.beta_tilde = torch.cat([nan, beta * (1.0 - self.alpha_bar[:-1]) / (1.0 - self.alpha_bar[1:])])
        m = self.alpha.clone()
        m[K] = 1.0
        self.scale_sq = m  # m_t: y = sqrt(m_t)·x_{t-1}; m_K = 1 (final level unscaled)
        self.init_noise_std = (self.scale_sq * self.beta_tilde).sqrt()  # sqrt(m_t·β̃_t) (§4)
        self.loss_weight = self.sigma[1] / self.sigma  # w_t = σ_1/σ_t (§2)
        self.is_final = torch.zeros(K + 1, dtype=torch.bool)
        self.is_final[K] = True

    def langevin(self, rule: StepRule, c0: float, step_multiplier: float = 1.0) -> LangevinConstants:
        """Step sizes s_t = sqrt(2·c0·κ_t)·σ_t·sz_mul and recovery coefficients c0·κ_t (§3).

        rule "toy":   κ_t = 1/σ̄_0 (constant).  rule "image": κ_t = σ̄_{t-1}/σ̄_0.
        The recovery term is switched off at the final transition t = K.
        """
        if rule == "toy":
            kappa = torch.full((self.num_levels + 1,), 1.0, dtype=torch.float64) / self.sigma_bar[0]
        elif rule == "image":
            kappa = torch.cat([self.sigma_bar[:1] * float("nan"), self.sigma_bar[:-1]]) / self.sigma_bar[0]
        else:
            raise ValueError(f"langevin.step_rule must be 'toy' or 'image', got {rule!r}")
        if c0 <= 0:
            raise ValueError(f"langevin.c0 must be > 0, got {c0}")
        step_size = (2.0 * c0 * kappa).sqrt() * self.sigma * step_multiplier
        quadratic = c0 * kappa * (~self.is_final).double()
        return LangevinConstants(step_size=step_size, quadratic_coeff=quadratic)

    def table(self, rule: StepRule, c0: float, step_multiplier: float = 1.0,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> "LevelTable":
        """Everything the training step and the sampler index by level, as tensors on ``device``."""
        langevin = self.langevin(rule, c0, step_multiplier)
        to = lambda v: v.to(device=device, dtype=dtype)  # noqa: E731
        return LevelTable(
            num_levels=self.num_levels,
            logsnr=to(self.logsnr),
            sqrt_alpha_bar=to(self.alpha_bar.sqrt()),
            sigma_bar=to(self.sigma_bar),
            scale=to(self.scale_sq.sqrt()),
            init_noise_std=to(self.init_noise_std),
            loss_weight=to(self.loss_weight),
            step_size=to(langevin.step_size),
            quadratic_coeff=to(langevin.quadratic_coeff),
            step_multiplier=step_multiplier,
        )

    def __repr__(self) -> str:
        return f"NoiseSchedule(num_levels={self.num_levels}, logsnr_min={self.logsnr_min}, logsnr_max={self.logsnr_max})"
