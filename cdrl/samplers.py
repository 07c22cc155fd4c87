"""One sampler per training method, behind one interface (cdrl.objectives.base.Sampler).

Evaluation, the sample CLI and the benchmarks call ``build_sampler(config, levels).sample(nets, n, shape)``
without knowing the method: CDRL and DRL sample ancestrally through the noise levels (§7), the MCMC and
single-scale score-matching EBMs by Langevin from noise at the cleanest level, the learned sampler through
its generator, multi-scale DSM by annealed Langevin dynamics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from cdrl.generation import Conditioning, TweedieMode, generate_in_batches
from cdrl.objectives.base import SampleOutput
from cdrl.objectives.mcmc import clean_energy_fn
from cdrl.objectives.score_matching import sigma_to_logsnr
from cdrl.schedule import LevelTable
from cdrl.sgld import annealed_langevin, sgld


def _unconditional(cond: Conditioning | None, method: str) -> None:
    if cond is not None and cond.labels:
        raise ValueError(f"method {method!r} trains an unconditional model; class labels need method cdrl or drl")


def _batches(num_samples: int, batch_size: int):
    for start in range(0, num_samples, batch_size):
        yield min(batch_size, num_samples - start)


@dataclass
class AncestralSampler:
    """CDRL's (and, with ``initializer=None``, DRL's) ancestral sampling from x_K ~ N(0, I) (§7)."""

    levels: LevelTable
    steps_per_level: int
    batch_size: int
    tweedie: TweedieMode = "none"
    final_step_noise: bool = True
    initializer: nn.Module | None = None  # DRL: the chain starts at x_t (drl.NoisyObservation)

    def sample(self, nets: Mapping[str, nn.Module], num_samples: int, data_shape: tuple[int, ...],
               device: torch.device | str = "cpu", steps: int | None = None, cond: Conditioning | None = None) -> SampleOutput:
        initializer = self.initializer if self.initializer is not None else nets["initializer"]
        samples, per_level = generate_in_batches(
            nets["energy_net"], initializer, self.levels, num_samples, data_shape, steps or self.steps_per_level,
            self.batch_size, cond=cond, tweedie=self.tweedie, device=device, final_step_noise=self.final_step_noise)
        return SampleOutput(samples, per_level)


@dataclass
class LangevinSampler:
    """SGLD (or MALA) from uniform noise in [-init_range, init_range]^d on F(x, λ_0)."""

    method: str
    levels: LevelTable
    num_steps: int
    step_size: float
    noise_std: float
    init_range: float
    batch_size: int
    mala: bool = False
    final_step_noise: bool = True

    def sample(self, nets: Mapping[str, nn.Module], num_samples: int, data_shape: tuple[int, ...],
               device: torch.device | str = "cpu", steps: int | None = None, cond: Conditioning | None = None) -> SampleOutput:
        _unconditional(cond, self.method)
        parts = []
        for n in _batches(num_samples, self.batch_size):
            start = (torch.rand(n, *data_shape, device=device) * 2 - 1) * self.init_range
            x, _ = sgld(clean_energy_fn(nets["energy_net"], self.levels, n), start, steps or self.num_steps,
                        self.step_size, self.noise_std, self.mala, self.final_step_noise)
            parts.append(x.cpu())
        return SampleOutput(torch.cat(parts))


@dataclass
class GeneratorSampler:
    """x = g(z) + σ·ε, z ~ N(0, I): the learned sampler's own distribution q."""

    latent_dim: int
    output_std: float
    batch_size: int

    @torch.no_grad()
    def sample(self, nets: Mapping[str, nn.Module], num_samples: int, data_shape: tuple[int, ...],
               device: torch.device | str = "cpu", steps: int | None = None, cond: Conditioning | None = None) -> SampleOutput:
        _unconditional(cond, "learned_sampler")
        parts = []
        for n in _batches(num_samples, self.batch_size):
            means = nets["generator"](torch.randn(n, self.latent_dim, device=device))
            parts.append((means + self.output_std * torch.randn_like(means)).cpu())
        return SampleOutput(torch.cat(parts))


@dataclass
class AnnealedLangevinSampler:
    """Annealed Langevin dynamics over the noise levels σ_1 > … > σ_L (Song & Ermon 2019), from N(0, σ_1²I)."""

    sigmas: list[float]
    steps_per_scale: int
    step_size: float
    batch_size: int
    final_step_noise: bool = True

    def sample(self, nets: Mapping[str, nn.Module], num_samples: int, data_shape: tuple[int, ...],
               device: torch.device | str = "cpu", steps: int | None = None, cond: Conditioning | None = None) -> SampleOutput:
        _unconditional(cond, "multiscale_dsm")
        energy_net = nets["energy_net"]
        parts = []
        for n in _batches(num_samples, self.batch_size):
            def energy(y: torch.Tensor, sigma: float, n=n) -> torch.Tensor:
                logsnr = sigma_to_logsnr(torch.full((n,), sigma, device=y.device))
                return energy_net(y, logsnr, None)

            start = self.sigmas[0] * torch.randn(n, *data_shape, device=device)
            parts.append(annealed_langevin(energy, start, self.sigmas, steps or self.steps_per_scale, self.step_size,
                                           self.final_step_noise).cpu())
        return SampleOutput(torch.cat(parts))
