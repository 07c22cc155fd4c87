"""Analytic FLOPs of one CDRL training iteration and one generation, counted from the nets.

Every nn.Linear and nn.Conv2d called during one forward pass adds its multiply-adds (Linear: in·out per
example; Conv2d: out_channels·H_out·W_out·in_channels/groups·k_h·k_w per example), probed on a 2-example
batch and scaled linearly. Elementwise work (activations, norms, attention softmax) is not counted.
E = MACs of the energy net's y-dependent ``energy`` per example, C = its x-independent ``condition`` per
distinct (λ, label) row (the nets compute it once per distinct row, cdrl/nets/embedding.py), I = the
initializer's forward per example; B the batch, N Langevin steps, R = K·(classes+1) distinct rows at most
(min(B, R)), K levels, S samples, n steps per level:

    training   = 2·[ B·(3·I + N·2·E + 3·2·E) + R·(C + 3·C) ]   FLOPs per iteration
    generation = 2·K·[ S·(I + n·2·E) + C ]  (+ 2·(S·2·E + C) for a Tweedie step)

2 FLOPs per MAC. A forward costs 1×; a backward to the inputs only (Langevin's ∇_y, weights not needed)
1× more, so a Langevin step is 2·E; a full backward (inputs and weights) 2× more, so the initializer and
the loss's energy pass on the 2B positive+negative batch cost 3× their forward. C runs once per Langevin
chain and once, with its backward, inside the loss's forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cdrl.objectives.base import unwrap

PROBE_BATCH = 2


def _count_macs(modules: nn.Module, run) -> int:
    total = 0

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    handles = []
    for sub in modules.modules():
        if isinstance(sub, nn.Linear):
            handles.append(sub.register_forward_hook(linear_hook))
        elif isinstance(sub, nn.Conv2d):
            handles.append(sub.register_forward_hook(conv_hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return total


@dataclass
class NetMacs:
    """Multiply-adds: energy net's ``energy`` (E) per example, ``condition`` (C) per distinct row, initializer (I)."""

    energy: float
    condition: float
    initializer: float

    def train_flops(self, batch: int, langevin_steps: int, distinct_rows: int) -> float:
        E, C, I = self.energy, self.condition, self.initializer  # noqa: E741
        return 2.0 * (batch * (3 * I + langevin_steps * 2 * E + 3 * 2 * E) + min(batch, distinct_rows) * 4 * C)

    def generation_flops(self, samples: int, levels: int, steps_per_level: int, tweedie: bool) -> float:
        E, C, I = self.energy, self.condition, self.initializer  # noqa: E741
        per_level = samples * (I + steps_per_level * 2 * E) + C
        return 2.0 * (levels * per_level + ((samples * 2 * E + C) if tweedie else 0.0))

    def as_dict(self) -> dict[str, float]:
        return {"energy": self.energy, "condition": self.condition, "initializer": self.initializer}


def count_net_macs(energy_net: nn.Module, initializer: nn.Module, item_shape: tuple[int, ...],
                   num_classes: int, device: torch.device) -> NetMacs:
    energy_net, initializer = unwrap(energy_net), unwrap(initializer)
    y = torch.randn(PROBE_BATCH, *item_shape, device=device)
    logsnr = torch.zeros(PROBE_BATCH, device=device)  # one distinct row
    labels = torch.ones(PROBE_BATCH, dtype=torch.long, device=device) if num_classes else None
    condition = energy_net.condition(logsnr, labels)
    return NetMacs(
        energy=_count_macs(energy_net, lambda: energy_net.energy(y, condition)) / PROBE_BATCH,
        condition=_count_macs(energy_net, lambda: energy_net.condition(logsnr, labels)),
        initializer=_count_macs(initializer, lambda: initializer(y, logsnr, labels)) / PROBE_BATCH,
    )
