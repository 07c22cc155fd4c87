"""Exponential moving average of a network's parameters (§6: decay 0.9999, warm-started like torch_ema).

The effective decay at update n is min(decay, (1 + n)/(10 + n)). Only parameters are averaged; buffers
(spectral norm's u/v) are taken from the live network, as in the official code (§12.5).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, net: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = [p.detach().clone() for p in net.parameters()]

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        params = [p.detach() for p in net.parameters()]
        torch._foreach_lerp_(self.shadow, params, 1.0 - decay)

    @torch.no_grad()
    def averaged_copy(self, net: nn.Module) -> nn.Module:
        """A deep copy of ``net`` (buffers included) carrying the averaged parameters, in eval mode."""
        averaged = copy.deepcopy(net)
        for p, s in zip(averaged.parameters(), self.shadow):
            p.copy_(s)
        return averaged.eval().requires_grad_(False)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"EMA state has {len(state['shadow'])} tensors, the network has {len(self.shadow)}")
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        for s, saved in zip(self.shadow, state["shadow"]):
            s.copy_(saved)
