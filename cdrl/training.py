"""The training loop's step, identical for CDRL and every baseline (it calls the objective it is given).

Per iteration (§6): zero grads → objective losses → one backward → per network: clip the total grad
norm, optimizer step, LR-schedule step, EMA update. The objective (forward passes and Langevin) runs in
the PerfSettings' autocast region, the backward outside it (cdrl/perf.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from cdrl.ema import EMA
from cdrl.health import HealthLimits, find_problems
from cdrl.objectives.base import Objective, unwrap
from cdrl.perf import PerfSettings


@dataclass
class OptimizerSpec:
    """Adam/AdamW settings and the learning-rate schedule: the linear warm-up lr·min(1, (k + offset)/warmup)
    (§4, §6), then, when ``decay_until`` lies past the warm-up, a cosine decay from lr at the end of the warm-up
    to lr·``final_scale`` at update ``decay_until``, held there after it (``train.lr_decay: cosine``, an addition
    of this repository: the paper keeps the learning rates constant after the warm-up)."""

    kind: str  # "adam" | "adamw"
    lr: float
    betas: tuple[float, float]
    warmup: int
    warmup_offset: int = 0
    weight_decay: float = 0.0
    fused: bool = False  # one fused kernel per step (perf.fused_optimizer)
    decay_until: int = 0  # 0: constant after the warm-up
    final_scale: float = 1.0

    def lr_factor(self, k: int) -> float:
        """The multiple of ``lr`` used for update ``k`` (0-based)."""
        warmup_factor = min(1.0, (k + self.warmup_offset) / self.warmup)
        decay_start = max(0, self.warmup - self.warmup_offset)
        if self.decay_until <= decay_start:
            return warmup_factor
        progress = min(1.0, max(0.0, (k - decay_start) / (self.decay_until - decay_start)))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return warmup_factor * (self.final_scale + (1.0 - self.final_scale) * cosine)

    def build(self, net: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        optimizer_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[self.kind]
        kwargs = {"weight_decay": self.weight_decay} if self.kind == "adamw" else {}
        if self.fused:
            kwargs["fused"] = True
        optimizer = optimizer_cls(net.parameters(), lr=self.lr, betas=self.betas, eps=1e-8, **kwargs)
        # a plain function: LambdaLR's state_dict would try to copy a callable object's attributes
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: self.lr_factor(k))


class Trainer:
    """Owns the networks' optimizers, LR schedules and EMAs; ``step`` runs one training iteration."""

    def __init__(
        self,
        nets: Mapping[str, nn.Module],
        objective: Objective,
        optimizers: Mapping[str, OptimizerSpec],
        grad_clip: float,
        ema_decay: float,
        zero_grad: bool = True,
        perf: PerfSettings | None = None,
        health: HealthLimits | None = None,
        agree: Callable[[bool], bool] = lambda bad: bad,
    ):
        """``health``: skip steps whose values break these limits (None: a non-finite loss raises).
        ``agree``: True on every data-parallel rank when it is True on any, so all ranks skip together."""
        missing = set(objective.network_names) - set(nets)
        if missing:
            raise ValueError(f"objective needs networks {sorted(missing)} that were not given")
        self.nets = dict(nets)
        self.objective = objective
        self.grad_clip = grad_clip
        self.zero_grad = zero_grad
        self.perf = perf or PerfSettings()
        self.optimizers, self.schedules, self.emas = {}, {}, {}
        for name in objective.network_names:
            self.optimizers[name], self.schedules[name] = optimizers[name].build(self.nets[name])
            self.emas[name] = EMA(unwrap(self.nets[name]), ema_decay)
        self.step_count = 0
        self.health, self.agree = health, agree
        self.last_problems: list[str] = []  # why the last step was skipped (empty: it was applied)

    def step(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.zero_grad:
            for optimizer in self.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
        with self.perf.autocast():
            out = self.objective(self.nets, x, labels)
        total = sum(out.losses.values())
        if self.health is None and not torch.isfinite(total):
            raise FloatingPointError(f"non-finite loss at step {self.step_count}: " + ", ".join(
                f"{k}={v.item():.4g}" for k, v in out.losses.items()))
        total.backward()
        metrics = dict(out.metrics)
        metrics.update({f"loss/{name}": loss.detach() for name, loss in out.losses.items()})
        for name, optimizer in self.optimizers.items():
            metrics[f"grad_norm/{name}"] = torch.nn.utils.clip_grad_norm_(self.nets[name].parameters(), self.grad_clip)
            metrics[f"lr/{name}"] = torch.tensor(optimizer.param_groups[0]["lr"])
        if self.health is not None and self._skip_if_unhealthy(out, metrics):
            return metrics
        for name, optimizer in self.optimizers.items():
            net = self.nets[name]
            optimizer.step()
            self.schedules[name].step()
            self.emas[name].update(unwrap(net))
        self.step_count += 1
        return metrics

    def _skip_if_unhealthy(self, out, metrics: dict[str, torch.Tensor]) -> bool:
        """Check the step against the health limits; a bad step changes no weights, optimizer state or EMA.

        The step still counts (step_count advances, the LR schedules do not), so the next step draws new
        randomness.
        """
        checks = {f"loss/{k}": v for k, v in out.losses.items()}
        checks.update(out.health)
        checks.update({k: v for k, v in metrics.items() if k.startswith("grad_norm/")})
        problems = find_problems(checks, self.health)
        if not self.agree(bool(problems)):
            self.last_problems = []
            return False
        self.last_problems = problems or ["another data-parallel rank saw a bad step"]
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        return True

    def scale_learning_rates(self, factor: float) -> None:
        """Multiply every network's learning rate (and its schedule's base) by ``factor`` (rollback, §health)."""
        for name, schedule in self.schedules.items():
            schedule.base_lrs = [lr * factor for lr in schedule.base_lrs]
            for group in self.optimizers[name].param_groups:
                group["lr"] *= factor

    def averaged(self, name: str) -> nn.Module:
        """The EMA version of network ``name`` (a copy in eval mode), the default for sampling."""
        return self.emas[name].averaged_copy(unwrap(self.nets[name]))

    def state_dict(self) -> dict:
        return {
            "step": self.step_count,
            "nets": {k: unwrap(v).state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedules": {k: v.state_dict() for k, v in self.schedules.items()},
            "emas": {k: v.state_dict() for k, v in self.emas.items()},
            **({"objective": self.objective.state_dict()} if hasattr(self.objective, "state_dict") else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step_count = state["step"]
        for name, net in self.nets.items():
            unwrap(net).load_state_dict(state["nets"][name])
        for name in self.optimizers:
            self.optimizers[name].load_state_dict(state["optimizers"][name])
            self.schedules[name].load_state_dict(state["schedules"][name])
            self.emas[name].load_state_dict(state["emas"][name])
        if "objective" in state and hasattr(self.objective, "load_state_dict"):
            self.objective.load_state_dict(state["objective"])
