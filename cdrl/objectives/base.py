"""One interface for every training objective (CDRL and the baselines), after NVlabs/edm's losses.

An objective is called with the named networks and a data batch and returns one scalar loss per network
it trains, plus detached metrics. The training loop (cdrl.training.Trainer) never branches on the method:
it backpropagates the losses, clips and steps each network's optimizer.
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
