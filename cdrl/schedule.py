"""The noise schedule: every per-level constant of CDRL in one place.

Spec: docs/algorithm.md §1 (truncated cosine logSNR), §2 (pairs, loss weights), §3 (Langevin step
sizes), §4 (initializer noise), §10 (reference values), §14 (DRL's schedule). Three families of levels
share every derived constant: "cosine" (the paper's, the default), "linear" (linear in logSNR) and "drl"
(DRL's subsampled DDPM betas). Level 0 is the cleanest level (logSNR = max),
level K the noisiest. Transition t in 1..K goes from level t to level t-1; arrays indexed by t keep a
placeholder at index 0 so that ``schedule.sigma[t]`` reads like the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

StepRule = Literal["toy", "image"]
ScheduleFamily = Literal["cosine", "linear", "drl"]
SCHEDULE_FAMILIES: tuple[str, ...] = ("cosine", "linear", "drl")
DRL_DIFFUSION_STEPS = 1000  # §14: DDPM's 1000 linear betas from 1e-4 to 0.02
DRL_BETA_START, DRL_BETA_END = 1e-4, 0.02


def cosine_logsnr(u: torch.Tensor, logsnr_min: float, logsnr_max: float) -> torch.Tensor:
    """λ(u) = -2 log tan(a·u + b), with λ(0) = logsnr_max and λ(1) = logsnr_min (§1)."""
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    return -2.0 * torch.log(torch.tan(a * u + b))


def linear_logsnr(u: torch.Tensor, logsnr_min: float, logsnr_max: float) -> torch.Tensor:
    """λ(u) = λ_max + (λ_min - λ_max)·u: levels equally spaced in logSNR."""
    return logsnr_max + (logsnr_min - logsnr_max) * u


def drl_logsnr(num_levels: int) -> torch.Tensor:
    """DRL's levels (§14): DDPM's linear betas subsampled at [0, s, 2s, …, (K-1)s, 999], s = 1000 // (2(K-1)).

    ā at level i is ∏_{j ≤ idx[i]} (1 - β_j); returned as λ_i = log(ā_i / (1 - ā_i)). The last level jumps to
    (almost) pure noise. Needs K >= 2; the logSNR range is fixed by the betas.
    """
    if num_levels < 2:
        raise ValueError(f"schedule.num_levels must be >= 2 for family 'drl', got {num_levels}")
    betas = torch.linspace(DRL_BETA_START, DRL_BETA_END, DRL_DIFFUSION_STEPS, dtype=torch.float64)
    stride = DRL_DIFFUSION_STEPS // (2 * (num_levels - 1))
    if stride < 1:
        raise ValueError(f"schedule.num_levels={num_levels} is too many for family 'drl' (at most {DRL_DIFFUSION_STEPS // 2 + 1})")
    index = torch.tensor([i * stride for i in range(num_levels)] + [DRL_DIFFUSION_STEPS - 1])
    alpha_bar = torch.cumprod(1.0 - betas, dim=0)[index]
    return torch.log(alpha_bar) - torch.log1p(-alpha_bar)


def family_logsnr(family: str, num_levels: int, logsnr_min: float, logsnr_max: float) -> torch.Tensor:
    """λ_i for i = 0..K of a schedule family (float64)."""
    u = torch.arange(num_levels + 1, dtype=torch.float64) / num_levels
    if family == "cosine":
        return cosine_logsnr(u, logsnr_min, logsnr_max)
    if family == "linear":
        return linear_logsnr(u, logsnr_min, logsnr_max)
    if family == "drl":
        return drl_logsnr(num_levels)
    raise ValueError(f"schedule.family must be one of {', '.join(SCHEDULE_FAMILIES)}, got {family!r}")


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
    """``num_levels`` = K levels above the data (§1, §10) of a schedule ``family``: "cosine" (the paper's
    truncated cosine logSNR), "linear" (linear in logSNR over the same range) or "drl" (§14; ignores the range).

    All tensors are float64 on the CPU; ``to(device, dtype)`` gives a copy for the hot path.
    """

    def __init__(self, num_levels: int = 6, logsnr_min: float = -5.1, logsnr_max: float = 9.8,
                 family: ScheduleFamily = "cosine"):
        if num_levels < 1:
            raise ValueError(f"schedule.num_levels must be >= 1, got {num_levels}")
        if not logsnr_min < logsnr_max:
            raise ValueError(f"schedule.logsnr_min ({logsnr_min}) must be < schedule.logsnr_max ({logsnr_max})")
        self.num_levels = num_levels
        self.family = family
        K = num_levels
        self.logsnr = family_logsnr(family, K, logsnr_min, logsnr_max)  # λ_i, i = 0..K
        self.logsnr_min = float(self.logsnr[K])
        self.logsnr_max = float(self.logsnr[0])
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
        return (f"NoiseSchedule(num_levels={self.num_levels}, logsnr_min={self.logsnr_min:g}, "
                f"logsnr_max={self.logsnr_max:g}, family={self.family!r})")
