"""Sampling from a trained CDRL model (docs/algorithm.md §7, §8).

Ancestral sampling from x_K ~ N(0, I) through all levels: at level i the initializer proposes, Langevin on
the EBM refines, and x_{i-1} = y / sqrt(m_i). Images end with a Tweedie denoising step. Guidance and
composition mix conditional energies; inpainting clamps known pixels after each Langevin step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from cdrl.langevin import Projection, langevin_refine, standard_normal_like
from cdrl.perf import EnergyCall, PerfSettings, energy_call, plain_energy
from cdrl.schedule import LevelTable

TweedieMode = Literal["none", "faithful", "consistent"]


@dataclass
class Conditioning:
    """Which energies to mix: F_∅ + Σ_j w_j·(F_{c_j} − F_∅) (§8).

    Plain conditional sampling is one term with weight 1; classifier-free guidance with strength w is one
    term with weight 1 + w; composition of several labels is several terms. No terms: unconditional.
    """

    labels: list[torch.Tensor] = field(default_factory=list)  # net labels (1..C), one tensor per term
    weights: list[float] = field(default_factory=list)

    @classmethod
    def guided(cls, labels: torch.Tensor, guidance_weight: float) -> "Conditioning":
        return cls(labels=[labels], weights=[1.0 + guidance_weight])

    def terms(self, batch: int, device: torch.device) -> list[tuple[torch.Tensor | None, float]]:
        """(labels, coefficient) pairs whose weighted sum is the mixed output; null label 0 for ∅."""
        if not self.labels:
            return [(None, 1.0)]
        null = torch.zeros(batch, dtype=torch.long, device=device)
        terms = [(null, 1.0 - sum(self.weights))]
        terms += [(labels.to(device), w) for labels, w in zip(self.labels, self.weights)]
        return terms

    def select(self, index: slice) -> "Conditioning":
        return Conditioning([labels[index] for labels in self.labels], list(self.weights))


def mixed_initializer(initializer: nn.Module, x: torch.Tensor, logsnr: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    return sum(w * initializer(x, logsnr, labels) for labels, w in cond.terms(len(x), x.device))


def mixed_energy_fn(energy_net: nn.Module, logsnr: torch.Tensor, cond: Conditioning, batch: int, device: torch.device,
                    call: EnergyCall = plain_energy):
    """y ↦ Σ coefficient·F(y, λ, labels), with each term's time/label work done once."""
    terms = [(energy_net.condition(logsnr, labels), w) for labels, w in cond.terms(batch, device)]
    return lambda y: sum(w * call(energy_net, y, condition) for condition, w in terms)


def tweedie_denoise(energy_net: nn.Module, x: torch.Tensor, levels: LevelTable, cond: Conditioning, mode: TweedieMode) -> torch.Tensor:
    """x_out = (x + σ̄_0²·∇_x[F(sqrt(α_1)·x, λ_0)/d]) / sqrt(ā_0) (§7).

    d = c0·κ_1·σ_1² = s_1²/2 in "faithful" mode (the official code's 2× score, §12.3), d = s_1² in
    "consistent" mode (the Langevin-consistent energy).
    """
    if mode == "none":
        return x
    s1_sq = levels.step_size[1] ** 2 / levels.step_multiplier**2
    divisor = s1_sq / 2 if mode == "faithful" else s1_sq
    energy = mixed_energy_fn(energy_net, levels.logsnr[0].expand(len(x)), cond, len(x), x.device)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(levels.scale[1] * x).sum(), x)
    score = grad / divisor
    return ((x + levels.sigma_bar[0] ** 2 * score) / levels.sqrt_alpha_bar[0]).detach()


@torch.no_grad()
def generate(
    energy_net: nn.Module,
    initializer: nn.Module,
    levels: LevelTable,
    num_samples: int,
    data_shape: tuple[int, ...],
    steps_per_level: int,
    cond: Conditioning | None = None,
    tweedie: TweedieMode = "none",
    return_levels: bool = False,
    inpaint: "Inpainting | None" = None,
    device: torch.device | str = "cpu",
    perf: PerfSettings | None = None,
    final_step_noise: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Samples x_0 of shape (num_samples, *data_shape); with ``return_levels`` also [x_{K-1}, …, x_0].

    Pass the EMA networks (the default everywhere). ``steps_per_level`` below the training value is the
    sampling-efficient variant. ``perf`` (cdrl/perf.py): autocast region and compiled energy; the chain
    state stays float32. ``final_step_noise=False``: each level's last Langevin step adds no noise.
    """
    perf = perf or PerfSettings()
    with perf.autocast():
        return _generate(energy_net, initializer, levels, num_samples, data_shape, steps_per_level, cond or Conditioning(),
                         tweedie, return_levels, inpaint, device, perf, final_step_noise)


def _generate(energy_net: nn.Module, initializer: nn.Module, levels: LevelTable, num_samples: int,
              data_shape: tuple[int, ...], steps_per_level: int, cond: Conditioning, tweedie: TweedieMode,
              return_levels: bool, inpaint: "Inpainting | None", device: torch.device | str,
              perf: PerfSettings, final_step_noise: bool) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    call = energy_call(perf)
    K = levels.num_levels
    x = torch.randn(num_samples, *data_shape, device=device)
    per_level = []
    for i in range(K, 0, -1):
        logsnr_t = levels.logsnr[i].expand(num_samples)
        logsnr_prev = levels.logsnr[i - 1].expand(num_samples)
        scale = levels.scale[i]
        proposal = mixed_initializer(initializer, x, logsnr_t, cond) + levels.init_noise_std[i] * standard_normal_like(x)
        project = inpaint.projection(levels, i, scale) if inpaint is not None else None
        y = langevin_refine(
            mixed_energy_fn(energy_net, logsnr_prev, cond, num_samples, x.device, call),
            project(proposal, -1) if project else proposal,
            anchor=x,
            step_size=levels.step_size[i].expand(num_samples),
            quadratic_coeff=levels.quadratic_coeff[i].expand(num_samples),
            num_steps=steps_per_level,
            step_multiplier=levels.step_multiplier,
            project=project,
            final_step_noise=final_step_noise,
        )
        x = y / (scale + 1e-8)
        per_level.append(x)
    x = tweedie_denoise(energy_net, x, levels, cond, tweedie)
    if inpaint is not None:
        x = inpaint.restore(x)
    if return_levels:
        per_level[-1] = x
        return x, per_level
    return x


@dataclass
class Inpainting:
    """Known values ``observed`` where ``mask`` is 1 (§8, a suggestion consistent with the paper).

    After every Langevin step at transition t the known entries of y are overwritten with the
    forward-noised observation at level t−1, in y-space: sqrt(m_t)·(sqrt(ā_{t-1})·x_obs + σ̄_{t-1}·ε).
    One ε per level keeps the observation consistent across the chain; the final x_0 carries the observed
    entries exactly (``restore``).
    """

    observed: torch.Tensor
    mask: torch.Tensor

    def projection(self, levels: LevelTable, t: int, scale: torch.Tensor) -> Projection:
        noisy = levels.sqrt_alpha_bar[t - 1] * self.observed + levels.sigma_bar[t - 1] * torch.randn_like(self.observed)
        known = scale * noisy
        mask = self.mask.to(known.dtype)
        return lambda y, _k: mask * known + (1 - mask) * y

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """Level 0: the observed entries exactly as observed (no noise, no Tweedie, no y-space rounding)."""
        return torch.where(self.mask.bool(), self.observed.to(x.dtype), x)


def energy_score(energy_net: nn.Module, x: torch.Tensor, levels: LevelTable, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Out-of-distribution score: log-density up to a constant at the cleanest level, F(sqrt(α_1)x, λ_0)/s_1².

    Higher means more in-distribution (§8, a suggestion consistent with the paper).
    """
    logsnr = levels.logsnr[0].expand(len(x))
    with torch.no_grad():
        return energy_net(levels.scale[1] * x, logsnr, labels) / levels.step_size[1] ** 2


def generate_in_batches(
    energy_net: nn.Module,
    initializer: nn.Module,
    levels: LevelTable,
    num_samples: int,
    data_shape: tuple[int, ...],
    steps_per_level: int,
    batch_size: int,
    cond: Conditioning | None = None,
    tweedie: TweedieMode = "none",
    device: torch.device | str = "cpu",
    perf: PerfSettings | None = None,
    final_step_noise: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``generate`` over batches of at most ``batch_size``; returns (x_0, [x_{K-1}, …, x_0]) on the CPU."""
    finals, levels_out = [], []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        part_cond = cond.select(slice(start, start + n)) if cond is not None else None
        x, per_level = generate(energy_net, initializer, levels, n, data_shape, steps_per_level, part_cond,
                                tweedie, return_levels=True, device=device, perf=perf,
                                final_step_noise=final_step_noise)
        finals.append(x.cpu())
        levels_out.append([v.cpu() for v in per_level])
    return torch.cat(finals), [torch.cat(parts) for parts in zip(*levels_out)]
