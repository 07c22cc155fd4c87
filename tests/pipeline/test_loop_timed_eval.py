"""Evaluation at fixed training times (tune.eval_every_s), and training seconds carried across a resume.

The loop's clock is replaced by one that ticks 1/64 s per reading, so every training step lasts exactly
1/64 s of "training time" whatever the machine's load.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import pipeline.loop
from cdrl.data import load_builtin
from pipeline.loop import LoopHooks, TrainingData, WorkerContext, run_training

TICK = 1 / 64


class TickingClock:
    def __init__(self):
        self.readings = itertools.count()

    def perf_counter(self) -> float:
        return next(self.readings) * TICK


@pytest.fixture
def ticking_clock(monkeypatch):
    monkeypatch.setattr(pipeline.loop, "time", TickingClock())


def toy_data() -> TrainingData:
    return TrainingData(torch.from_numpy(load_builtin("8squares", 2000, 0)[0]))


def test_evaluates_at_each_multiple_of_eval_every_s_and_resumes_the_clock(tiny_toy_config, ticking_clock):
    config = tiny_toy_config
    config.train.iterations, config.train.time_budget_s, config.train.log_every = 100_000, 16 * TICK, 1
    config.tune.eval_every_s = 4 * TICK
    logged, evaluations, checkpoints = {}, [], []
    hooks = LoopHooks(log=lambda step, m: logged.__setitem__(step, m["train_seconds"]),
                      evaluate=lambda step, trainer, final: evaluations.append((step, final)),
                      checkpoint=lambda step, ckpt, final: checkpoints.append(ckpt))
    run_training(config, toy_data(), WorkerContext(), hooks)
    assert logged[1] == TICK and logged[16] == 16 * TICK  # one tick of training per step
    # Every 4 ticks of training, never twice per mark; the budget's end (step 16) is the final evaluation.
    assert evaluations == [(4, False), (8, False), (12, False), (16, True)]
    assert checkpoints[-1]["extra"]["train_seconds"] == 16 * TICK

    config.train.time_budget_s = 24 * TICK
    logged.clear(), evaluations.clear()
    run_training(config, toy_data(), WorkerContext(), hooks, resume=checkpoints[-1])
    assert logged[17] == 17 * TICK  # the clock continues from the checkpoint's training seconds
    assert evaluations == [(20, False), (24, True)]
