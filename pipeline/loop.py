"""The training loop run by every worker (one process locally, or each Ray Train worker).

It knows nothing of Ray or MLflow: the caller passes a ``WorkerContext`` (rank, device, how to wrap a net
for data parallelism) and ``LoopHooks`` (where metrics and checkpoints go). Randomness is keyed by
(seed, rank, step), so N steps + resume + N steps equals 2N steps straight.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cdrl.checkpoint import build_checkpoint
from cdrl.config import Config
from cdrl.data.augment import random_horizontal_flip
from cdrl.factory import build_levels, build_nets, build_trainer
from cdrl.training import Trainer
from pipeline.health_guard import HealthGuard


@dataclass
class TrainingData:
    """The worker's share of the dataset, in model space (float32), with optional int64 labels."""

    x: torch.Tensor
    labels: torch.Tensor | None = None

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


@dataclass
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    wrap: Callable[[nn.Module], nn.Module] = lambda net: net  # DDP under Ray Train
    any_rank_flag: Callable[[bool], bool] = lambda flag: flag  # all-reduce of a stop flag across ranks


@dataclass
class LoopHooks:
    log: Callable[[int, dict[str, float]], None] = lambda step, metrics: None
    checkpoint: Callable[[int, dict, bool], None] = lambda step, checkpoint, final: None
    # every eval.every steps (and tune.eval_every_s training seconds) and at the end, on every rank
    evaluate: Callable[[int, Trainer, bool], None] = lambda step, trainer, final: None
    after_step: Callable[[int], None] = lambda step: None
    health_event: Callable[[int, str, str], None] = lambda step, kind, detail: None  # skip / rollback / diverged


def step_seed(seed: int, rank: int, step: int) -> int:
    """One seed per (run seed, rank, step): resuming at step k replays exactly the randomness of step k."""
    return (seed * 1_000_003 + rank * 10_007 + step) % (2**63 - 1)


def metrics_to_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalars as they are; per-level vectors (length K) as ``name/level_t``; NaN (empty level) dropped."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        value = value.detach().float().cpu()
        if value.numel() == 1:
            out[name] = float(value)
        else:
            for t, v in enumerate(value.tolist(), start=1):
                if not np.isnan(v):
                    out[f"{name}/level_{t}"] = v
    return out


def per_worker_batch(config: Config, world_size: int) -> int:
    batch = config.train.batch_size
    if batch % world_size:
        raise ValueError(f"train.batch_size={batch} must be divisible by the number of workers ({world_size})")
    return batch // world_size


def build_worker_trainer(config: Config, item_shape: tuple[int, ...], ctx: WorkerContext) -> Trainer:
    """Nets are initialised from the run seed alone, so every rank starts from the same weights."""
    torch.manual_seed(config.run.seed)
    levels = build_levels(config, ctx.device)
    nets = {name: ctx.wrap(net) for name, net in build_nets(config, item_shape, ctx.device).items()}
    return build_trainer(config, nets, levels, agree=ctx.any_rank_flag)


def warm_start_weights(checkpoint: dict) -> dict:
    """The part of a checkpoint a warm start takes: both nets' weights and their EMAs."""
    state = checkpoint["trainer"]
    return {"nets": state["nets"], "emas": state["emas"], "step": state["step"]}


def load_warm_start(trainer: Trainer, weights: dict) -> None:
    """Start from another run's weights and EMAs (a retrain from the champion). Optimizers, LR warm-ups and the
    step count start afresh, so ``train.iterations`` steps of fine-tuning follow."""
    from cdrl.objectives.base import unwrap

    for name, net in trainer.nets.items():
        unwrap(net).load_state_dict(weights["nets"][name])
        trainer.emas[name].load_state_dict(weights["emas"][name])


@dataclass
class LoopResult:
    trainer: Trainer
    train_seconds: float  # time spent in training steps (evaluation and checkpoints excluded)
    diverged: str | None = None  # the health guard's reason when it stopped the run (no final checkpoint)


def run_training(
    config: Config,
    data: TrainingData,
    ctx: WorkerContext,
    hooks: LoopHooks,
    resume: dict | None = None,
    warm_start: dict | None = None,
) -> LoopResult:
    """Train to ``train.iterations`` (or ``train.time_budget_s``), then evaluate and checkpoint once more.

    ``resume`` (this run's own checkpoint) restores everything; otherwise ``warm_start`` (``warm_start_weights``
    of another run's checkpoint) sets the starting weights."""
    trainer = build_worker_trainer(config, data.item_shape, ctx)
    if resume is not None:
        trainer.load_state_dict(resume["trainer"])
    elif warm_start is not None:
        load_warm_start(trainer, warm_start)
    batch = per_worker_batch(config, ctx.world_size)
    if batch > len(data.x):
        raise ValueError(f"per-worker batch {batch} exceeds the worker's {len(data.x)} examples")
    t = config.train
    sampler = torch.Generator(device="cpu")
    start, elapsed = trainer.step_count, float(resume.get("extra", {}).get("train_seconds", 0.0)) if resume else 0.0
    every_s = config.tune.eval_every_s  # > 0: also evaluate (hooks.evaluate) at fixed training times, for Tune
    next_eval_s = (elapsed // every_s + 1) * every_s if every_s > 0 else float("inf")

    def health_event(step: int, kind: str, detail: str) -> None:
        progress.write(f"health: {detail}")
        hooks.health_event(step, kind, detail)

    guard = HealthGuard(config, trainer, health_event, resume.get("extra", {}).get("health") if resume else None)
    diverged = None
    progress = tqdm(total=t.iterations, initial=start, desc=f"train {config.run.name}", disable=ctx.rank != 0,
                    mininterval=2.0, unit="it")
    window_start, window_steps = time.perf_counter(), 0

    def snapshot() -> dict:
        extra = {"train_seconds": elapsed, "world_size": ctx.world_size, "health": guard.counters()}
        return build_checkpoint(trainer.state_dict(), config.to_dict(), data.item_shape, extra)

    while trainer.step_count < t.iterations:
        step = trainer.step_count
        step_start = time.perf_counter()
        seed = step_seed(guard.seed, ctx.rank, step)
        torch.manual_seed(seed)
        sampler.manual_seed(seed)
        index = torch.randperm(len(data.x), generator=sampler)[:batch].to(data.x.device)
        labels = data.labels[index] if data.labels is not None else None
        x = data.x[index]
        if config.data.horizontal_flip:
            x = random_horizontal_flip(x, sampler)
        metrics = trainer.step(x, labels)
        diverged = guard.after_step()
        elapsed += time.perf_counter() - step_start
        if diverged:
            break
        progress.update(trainer.step_count - progress.n)
        window_steps += 1
        done = trainer.step_count
        if done <= step:  # rolled back: continue from the restored step
            continue
        hooks.after_step(done)
        timed_eval = every_s > 0 and ctx.any_rank_flag(elapsed >= next_eval_s)  # the same step on every rank
        if done % t.log_every == 0 or done == t.iterations or timed_eval:  # a timed evaluation logs too
            now = time.perf_counter()
            floats = metrics_to_floats(metrics)
            floats["samples_per_s"] = window_steps * t.batch_size / max(now - window_start, 1e-9)
            floats["train_seconds"] = elapsed
            floats.update({f"health/{k}": float(v) for k, v in guard.counters().items()})
            progress.set_postfix({k.removeprefix("loss/"): f"{v:.3g}" for k, v in floats.items() if k.startswith("loss/")})
            hooks.log(done, floats)
            window_start, window_steps = time.perf_counter(), 0
            if t.time_budget_s > 0 and ctx.any_rank_flag(elapsed >= t.time_budget_s) and done < t.iterations:
                progress.write(f"time budget of {t.time_budget_s:.0f}s reached at step {done}")
                break
            if timed_eval and done < t.iterations:
                hooks.evaluate(done, trainer, False)
                next_eval_s = (elapsed // every_s + 1) * every_s
        if config.eval.every and done % config.eval.every == 0 and done < t.iterations:
            hooks.evaluate(done, trainer, False)
        if t.checkpoint_every and done % t.checkpoint_every == 0 and done < t.iterations:
            hooks.checkpoint(done, snapshot(), False)
            guard.checkpointed()
    progress.close()
    if diverged:
        return LoopResult(trainer, elapsed, diverged)
    hooks.evaluate(trainer.step_count, trainer, True)
    hooks.checkpoint(trainer.step_count, snapshot(), True)
    return LoopResult(trainer, elapsed)
