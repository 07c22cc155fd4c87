"""Build the schedule table, networks, objective, sampler and trainer from one Config (``method`` picks them)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from cdrl.config import Config
from cdrl.health import HealthLimits
from cdrl.nets import build_energy_net, build_initializer
from cdrl.nets.generator import Generator
from cdrl.objectives.base import Objective, Sampler
from cdrl.objectives.cdrl import CooperativeRecoveryLikelihood
from cdrl.perf import PerfSettings, energy_call, to_memory_format
from cdrl.objectives.drl import DiffusionRecoveryLikelihood, NoisyObservation, without_initializer_noise
from cdrl.objectives.learned_sampler import LearnedSamplerObjective
from cdrl.objectives.mcmc import MaximumLikelihoodMCMC
from cdrl.objectives.score_matching import ScoreMatching, noise_levels
from cdrl.samplers import AncestralSampler, AnnealedLangevinSampler, GeneratorSampler, LangevinSampler
from cdrl.schedule import LevelTable, NoiseSchedule
from cdrl.training import OptimizerSpec, Trainer

SCORE_MATCHING_VARIANTS = {"exact_sm": "exact", "sliced_sm": "sliced", "dsm": "dsm", "multiscale_dsm": "multiscale_dsm"}


def network_names(config: Config) -> tuple[str, ...]:
    """The networks the configured method trains (the energy net always comes first)."""
    second = {"cdrl": ("initializer",), "learned_sampler": ("generator",)}.get(config.method, ())
    return ("energy_net", *second)


def build_schedule(config: Config) -> NoiseSchedule:
    sc = config.schedule
    return NoiseSchedule(sc.num_levels, sc.logsnr_min, sc.logsnr_max, sc.family)


def build_levels(config: Config, device: torch.device | str = "cpu") -> LevelTable:
    schedule = build_schedule(config)
    lv = config.langevin
    return schedule.table(lv.step_rule, lv.c0, lv.step_multiplier, device=device)


def build_nets(config: Config, data_shape: tuple[int, ...], device: torch.device | str = "cpu") -> dict[str, nn.Module]:
    perf = PerfSettings.resolve(config.perf, device)
    builders = {  # channels_last only where Langevin's passes go; the initializer's dropout masks keep their order
        "energy_net": lambda: to_memory_format(build_energy_net(config.model, data_shape).to(device), perf),
        "initializer": lambda: build_initializer(config.model, data_shape),
        "generator": lambda: Generator(data_shape, config.learned_sampler.latent_dim, config.learned_sampler.hidden),
    }
    return {name: builders[name]().to(device) for name in network_names(config)}


def build_objective(config: Config, levels: LevelTable, perf: PerfSettings | None = None) -> Objective:
    """``perf``: the speed switches (bf16 autocast, compile) for CDRL's energy calls (cdrl/perf.py)."""
    label_dropout = config.train.label_dropout if config.model.num_classes else 0.0
    if config.method == "cdrl":
        return CooperativeRecoveryLikelihood(levels, num_langevin_steps=config.langevin.num_steps,
                                             label_dropout=label_dropout, energy_call=energy_call(perf or PerfSettings()))
    if config.method == "drl":
        return DiffusionRecoveryLikelihood(levels, config.langevin.num_steps, label_dropout)
    if config.method == "mcmc":
        return MaximumLikelihoodMCMC(levels, config.mcmc)
    if config.method == "learned_sampler":
        return LearnedSamplerObjective(levels, config.learned_sampler)
    return ScoreMatching(levels, config.score_matching, SCORE_MATCHING_VARIANTS[config.method])


def sampler_steps(config: Config) -> int:
    """The configured chain length of the method's sampler: Langevin steps per level (CDRL, DRL), per chain
    (MCMC, single-scale score matching) or per noise scale (multi-scale DSM); unused by the learned sampler."""
    gen, method, sm = config.generation, config.method, config.score_matching
    if gen.steps_per_level:
        return gen.steps_per_level
    if method in ("cdrl", "drl"):
        return config.langevin.num_steps
    if method == "mcmc":
        return config.mcmc.sample_steps
    if method == "multiscale_dsm":
        return max(sm.sample_steps // sm.num_scales, 1)
    return sm.sample_steps


def build_sampler(config: Config, levels: LevelTable) -> Sampler:
    """The configured method's sampler for evaluation and the sample CLI (``generation`` settings apply)."""
    gen, method, steps = config.generation, config.method, sampler_steps(config)
    if method in ("cdrl", "drl"):
        return AncestralSampler(
            levels if method == "cdrl" else without_initializer_noise(levels), steps, gen.batch_size, gen.tweedie,
            gen.final_step_noise, initializer=NoisyObservation() if method == "drl" else None)
    if method == "mcmc":
        m = config.mcmc
        return LangevinSampler(method, levels, steps, m.step_size, m.noise_std, m.init_range, gen.batch_size, m.mala,
                               gen.final_step_noise)
    if method == "learned_sampler":
        return GeneratorSampler(config.learned_sampler.latent_dim, config.learned_sampler.output_std, gen.batch_size)
    sm = config.score_matching
    if method == "multiscale_dsm":
        return AnnealedLangevinSampler(noise_levels(sm), steps, sm.sample_step_size, gen.batch_size, gen.final_step_noise)
    return LangevinSampler(method, levels, steps, sm.sample_step_size / 2, sm.sample_step_size**0.5, sm.init_range,
                           gen.batch_size, final_step_noise=gen.final_step_noise)


def net_device(nets: dict[str, nn.Module]) -> torch.device:
    return next(next(iter(nets.values())).parameters()).device


def build_trainer(config: Config, nets: dict[str, nn.Module], levels: LevelTable,
                  agree: Callable[[bool], bool] = lambda bad: bad) -> Trainer:
    """Adam for the energy net (``train.energy_*``), AdamW for the second net (``train.initializer_*``: the
    initializer or the generator). ``agree``: the data-parallel any-rank reduction the health guard uses to
    skip steps together."""
    t = config.train
    perf = PerfSettings.resolve(config.perf, net_device(nets))
    objective = build_objective(config, levels, perf)
    fused = perf.fused_optimizer
    decay = {"decay_until": t.iterations, "final_scale": t.lr_final_scale} if t.lr_decay == "cosine" else {}
    specs = {
        "energy_net": OptimizerSpec("adam", t.energy_lr, tuple(t.energy_betas), t.energy_warmup, fused=fused, **decay),
        "second": OptimizerSpec(
            "adamw", t.initializer_lr, tuple(t.initializer_betas), t.initializer_warmup, t.initializer_warmup_offset,
            fused=fused, **decay,
        ),
    }
    optimizers = {name: specs["energy_net" if name == "energy_net" else "second"] for name in objective.network_names}
    h = config.health
    health = HealthLimits(h.max_abs_energy, h.max_grad_norm, h.max_langevin_displacement) if h.enabled else None
    return Trainer(nets, objective, optimizers, t.grad_clip, t.ema_decay, zero_grad=t.zero_grad, health=health,
                   agree=agree, perf=perf)


def nets_from_checkpoint(checkpoint: dict, device: torch.device | str = "cpu", use_ema: bool = True) -> tuple[Config, dict[str, nn.Module], tuple[int, ...]]:
    """(config, {name: net in eval mode}, data_shape) from a checkpoint dict; EMA weights by default."""
    from cdrl.config import config_from_dict
    from cdrl.ema import EMA

    config = config_from_dict(checkpoint["config"])
    data_shape = tuple(checkpoint["data_shape"])
    nets = build_nets(config, data_shape, device)
    state = checkpoint["trainer"]
    for name, net in nets.items():
        net.load_state_dict(state["nets"][name])
        if use_ema:
            ema = EMA(net, config.train.ema_decay)
            ema.load_state_dict(state["emas"][name])
            nets[name] = ema.averaged_copy(net)
        else:
            nets[name] = net.eval().requires_grad_(False)
    return config, nets, data_shape
