"""One interface for every training objective (CDRL and the baselines), after NVlabs/edm's losses.

An objective is called with the named networks and a data batch and returns one scalar loss per network
it trains, plus detached metrics. The training loop (cdrl.training.Trainer) never branches on the method:
it backpropagates the losses, clips and steps each network's optimizer. An objective with worker-local
state (a replay buffer) also has ``state_dict()`` / ``load_state_dict(state)``; the Trainer saves it.

Every method also has a ``Sampler`` (cdrl.factory.build_sampler): the evaluation draws samples through it
without knowing the method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

import torch
from torch import nn


@dataclass
class ObjectiveOutput:
    losses: dict[str, torch.Tensor]  # network name → scalar loss to minimise
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars, read at log time
    health: dict[str, torch.Tensor] = field(default_factory=dict)  # per-level magnitudes for the guard (cdrl.health)


class Objective(Protocol):
    network_names: tuple[str, ...]

    def __call__(self, nets: Mapping[str, nn.Module], x: torch.Tensor, labels: torch.Tensor | None) -> ObjectiveOutput:
        ...


@dataclass
class SampleOutput:
    samples: torch.Tensor  # (N, *data_shape) on the CPU
    per_level: list[torch.Tensor] | None = None  # noise-level methods: [x_{K-1}, …, x_0] on the CPU


class Sampler(Protocol):
    def sample(self, nets: Mapping[str, nn.Module], num_samples: int, data_shape: tuple[int, ...],
               device: torch.device | str = "cpu", steps: int | None = None, cond=None) -> SampleOutput:
        """``num_samples`` from the given (EMA) nets; ``steps`` overrides the configured chain length;
        ``cond`` (cdrl.generation.Conditioning) only for class-conditional CDRL."""
        ...


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module under a DistributedDataParallel wrapper (Langevin bypasses DDP's hooks)."""
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


def spectral_norm_power_step(net: nn.Module) -> None:
    """Advance every spectral-norm power iteration by one step, then leave ``net`` in eval mode.

    The official step runs the positive pass in train mode (one power iteration) and everything else in
    eval mode (§6). Doing the iteration explicitly lets positive and negative energies share one forward.
    """
    module = unwrap(net)
    module.train()
    with torch.no_grad():
        for sub in module.modules():
            if hasattr(sub, "parametrizations") and "weight" in sub.parametrizations:
                sub.weight  # noqa: B018 — accessing the weight in train mode runs one power iteration
    module.eval()
