"""The divergence guard around the training loop: skip bad steps, roll back, or stop with a clear reason.

The trainer skips a step whose values break the ``health`` limits (cdrl.health). Here: after
``health.skip_limit`` skipped steps in a row the run rolls back to the last good checkpoint (kept in
memory, on the CPU) with every learning rate times ``health.lr_scale`` and a new seed; after more than
``health.max_rollbacks`` rollbacks it stops and the backend reports the reason. A checkpoint counts as
good once the step after it was healthy (a checkpoint taken just after a bad update is not trusted).
All ranks see the same skip decisions (the trainer agrees across ranks), so they roll back together.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from cdrl.config import Config
from cdrl.training import Trainer

SEED_STRIDE = 7_919  # run seed + k·stride after the k-th rollback: new randomness for every later step

EventHook = Callable[[int, str, str], None]  # (step, kind "skip" | "rollback" | "diverged", detail)


class TrainingDiverged(RuntimeError):
    """The guard gave up: more rollbacks than ``health.max_rollbacks``; the message says what was bad."""


def to_cpu(value: Any) -> Any:
    """A deep copy of a (nested) state dict with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


class HealthGuard:
    def __init__(self, config: Config, trainer: Trainer, event: EventHook, resumed: dict | None = None):
        self.limits = config.health
        self.run_seed = config.run.seed
        self.trainer = trainer
        self.event = event
        self.rollbacks = int(resumed.get("rollbacks", 0)) if resumed else 0
        self.skipped = int(resumed.get("skipped_steps", 0)) if resumed else 0
        self.in_a_row = 0
        self.good = self._snapshot()  # the start (fresh or resumed) is good by definition
        self.pending: dict | None = None

    @property
    def seed(self) -> int:
        return self.run_seed + SEED_STRIDE * self.rollbacks

    def counters(self) -> dict[str, int]:
        """Saved in each checkpoint's extra["health"] and logged with the metrics."""
        return {"rollbacks": self.rollbacks, "skipped_steps": self.skipped}

    def _snapshot(self) -> dict:
        return {"trainer": to_cpu(self.trainer.state_dict()), "rollbacks": self.rollbacks}

    def checkpointed(self) -> None:
        """A checkpoint was just written: it becomes the rollback target once the next step is healthy."""
        if self.limits.enabled:
            self.pending = self._snapshot()

    def after_step(self) -> str | None:
        """Account for the step just taken; roll back when needed. Returns a reason when the run must stop."""
        if not self.limits.enabled:
            return None
        problems = self.trainer.last_problems
        step = self.trainer.step_count
        if not problems:
            self.in_a_row = 0
            if self.pending is not None:
                self.good, self.pending = self.pending, None
            return None
        self.skipped += 1
        self.in_a_row += 1
        self.pending = None
        detail = "; ".join(problems[:6]) + (f" (+{len(problems) - 6} more)" if len(problems) > 6 else "")
        self.event(step, "skip", f"step {step} skipped: {detail}")
        if self.in_a_row < self.limits.skip_limit:
            return None
        if self.rollbacks >= self.limits.max_rollbacks:
            reason = (f"training diverged: {self.in_a_row} bad steps in a row at step {step} after "
                      f"{self.rollbacks} rollback(s) (health.max_rollbacks={self.limits.max_rollbacks}); last: "
                      f"{detail}. Lower train.energy_lr / train.initializer_lr or langevin.step_multiplier, "
                      "or raise the health.* limits")
            self.event(step, "diverged", reason)
            return reason
        self.rollback(step, detail)
        return None

    def rollback(self, step: int, detail: str) -> None:
        self.rollbacks += 1
        self.in_a_row = 0
        self.trainer.load_state_dict(self.good["trainer"])
        self.trainer.scale_learning_rates(self.limits.lr_scale ** (self.rollbacks - self.good["rollbacks"]))
        self.good = self._snapshot()  # the restored state at the new rate and seed is the next target
        self.event(self.trainer.step_count, "rollback",
                   f"rollback {self.rollbacks} at step {step} to step {self.trainer.step_count}, learning rates "
                   f"×{self.limits.lr_scale ** self.rollbacks:.4g} of the configured ones, seed {self.seed}: {detail}")
