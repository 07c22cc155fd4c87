"""Training health: is this step's update safe to apply? (the divergence guard's test)

EBM training can diverge hours into a run: energies explode, gradients turn NaN, Langevin chains fly
off (DRL's official repository reports NaN gradients at its default settings). The objective reports,
per level, the largest |energy| and the largest Langevin displacement of the step; the trainer adds each
network's gradient norm before clipping. A step is bad when any of them is non-finite or above its limit.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class HealthLimits:
    max_abs_energy: float = 1e6
    max_grad_norm: float = 1e6
    max_langevin_displacement: float = 1e4

    def limit_for(self, name: str) -> float:
        if name.startswith("grad_norm/"):
            return self.max_grad_norm
        if name.startswith("loss/"):
            return float("inf")  # a loss only has to be finite
        return {"energy": self.max_abs_energy, "langevin_displacement": self.max_langevin_displacement}[name]


def per_level_max(values: torch.Tensor, t: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Largest |value| per transition t = 1..K (0 where a level has no example; +inf for NaN/inf): shape (K,)."""
    magnitude = values.detach().float().abs()
    magnitude = torch.where(torch.isfinite(magnitude), magnitude, torch.full_like(magnitude, float("inf")))
    out = torch.zeros(num_levels + 1, device=values.device)
    return out.scatter_reduce(0, t, magnitude, reduce="amax", include_self=True)[1:]


def find_problems(health: dict[str, torch.Tensor], limits: HealthLimits) -> list[str]:
    """Human-readable problems ("langevin_displacement at level 6 = inf > 1e+04"); empty when healthy.

    ``health`` maps a name to a scalar or a per-level vector (level t at index t-1).
    """
    problems = []
    for name, value in health.items():
        limit = limits.limit_for(name)
        values = value.detach().float().reshape(-1).cpu()
        for index, v in enumerate(values.tolist()):
            if not (v == v and abs(v) <= limit):  # NaN, inf or too large
                where = f" at level {index + 1}" if values.numel() > 1 else ""
                problems.append(f"{name}{where} = {v:.4g} > {limit:.4g}")
    return problems
