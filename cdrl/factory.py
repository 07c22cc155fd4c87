"""Build the schedule table, networks, objective and trainer from one Config."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from cdrl.config import Config
from cdrl.health import HealthLimits
from cdrl.nets import build_energy_net, build_initializer
from cdrl.objectives.cdrl import CooperativeRecoveryLikelihood
from cdrl.perf import PerfSettings, energy_call, to_memory_format
from cdrl.schedule import LevelTable, NoiseSchedule
from cdrl.training import OptimizerSpec, Trainer


def build_schedule(config: Config) -> NoiseSchedule:
    sc = config.schedule
    return NoiseSchedule(sc.num_levels, sc.logsnr_min, sc.logsnr_max, sc.family)


def build_levels(config: Config, device: torch.device | str = "cpu") -> LevelTable:
    schedule = build_schedule(config)
    lv = config.langevin
    return schedule.table(lv.step_rule, lv.c0, lv.step_multiplier, device=device)


def build_nets(config: Config, data_shape: tuple[int, ...], device: torch.device | str = "cpu") -> dict[str, nn.Module]:
    perf = PerfSettings.resolve(config.perf, device)
    return {  # channels_last only where Langevin's passes go; the initializer's dropout masks keep their order
        "energy_net": to_memory_format(build_energy_net(config.model, data_shape).to(device), perf),
        "initializer": build_initializer(config.model, data_shape).to(device),
    }


def net_device(nets: dict[str, nn.Module]) -> torch.device:
    return next(next(iter(nets.values())).parameters()).device


def build_trainer(config: Config, nets: dict[str, nn.Module], levels: LevelTable,
                  agree: Callable[[bool], bool] = lambda bad: bad) -> Trainer:
    """``agree``: the data-parallel any-rank reduction the health guard uses to skip steps together."""
    t = config.train
    perf = PerfSettings.resolve(config.perf, net_device(nets))
    objective = CooperativeRecoveryLikelihood(
        levels,
        num_langevin_steps=config.langevin.num_steps,
        label_dropout=t.label_dropout if config.model.num_classes else 0.0,
        energy_call=energy_call(perf),
    )
    fused = perf.fused_optimizer
    optimizers = {
        "energy_net": OptimizerSpec("adam", t.energy_lr, tuple(t.energy_betas), t.energy_warmup, fused=fused),
        "initializer": OptimizerSpec(
            "adamw", t.initializer_lr, tuple(t.initializer_betas), t.initializer_warmup, t.initializer_warmup_offset,
            fused=fused,
        ),
    }
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
