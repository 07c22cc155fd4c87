"""The worker training loop: fixed-seed regression, resume equivalence, checkpoints and batching."""
from __future__ import annotations

import pytest
import torch

from cdrl.checkpoint import load_checkpoint, save_checkpoint
from cdrl.data import load_builtin
from pipeline.loop import LoopHooks, TrainingData, WorkerContext, run_training


def toy_data(n: int = 2000) -> TrainingData:
    return TrainingData(torch.from_numpy(load_builtin("8squares", n, 0)[0]))


# Recorded with torch 2.13.0 (CPU) from this fixed-seed run in float32 (perf.autocast=fp32: the reference
# arithmetic; bf16 is checked against it in tests/cdrl/test_perf_switches.py); a change in the algorithm's
# arithmetic (schedule, pairs, Langevin, losses, optimizers) moves these numbers.
EXPECTED_LOSSES = [
    0.002019028877839446, 0.7420704364776611, 0.0030127419158816338, 0.6072078943252563,
    0.0017222149763256311, 0.550248384475708, -0.0009475975530222058, 0.7396747469902039,
]


def test_fixed_seed_short_training_regression(tiny_toy_config):
    tiny_toy_config.perf.autocast = "fp32"
    logged = []
    run_training(tiny_toy_config, toy_data(), WorkerContext(),
                 LoopHooks(log=lambda step, m: logged.append((step, m["energy_loss"], m["initializer_loss"]))))
    assert [s for s, _, _ in logged] == [5, 10, 15, 20]
    values = [v for _, e, i in logged for v in (e, i)]
    assert values == pytest.approx(EXPECTED_LOSSES, rel=1e-4, abs=1e-6)


def _params(trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for net in trainer.nets.values() for p in net.parameters()]
                     + [s.flatten() for ema in trainer.emas.values() for s in ema.shadow])


def test_train_n_checkpoint_resume_n_equals_2n(tiny_toy_config, tmp_path):
    """torchtune-style: N steps, checkpoint (through a file), resume, N more == 2N straight."""
    data = toy_data()
    config = tiny_toy_config
    config.train.iterations = 12
    straight = run_training(config, data, WorkerContext(), LoopHooks()).trainer

    saved = {}
    config.train.iterations = 6
    run_training(config, data, WorkerContext(), LoopHooks(checkpoint=lambda s, c, final: saved.setdefault(s, c)))
    path = save_checkpoint(saved[6], tmp_path / "ckpt.pt")
    config.train.iterations = 12
    resumed = run_training(config, data, WorkerContext(), LoopHooks(), resume=load_checkpoint(path)).trainer
    assert resumed.step_count == straight.step_count == 12
    assert torch.equal(_params(resumed), _params(straight))
    for name in straight.optimizers:
        assert straight.schedules[name].last_epoch == resumed.schedules[name].last_epoch


def test_periodic_and_final_checkpoints(tiny_toy_config):
    tiny_toy_config.train.checkpoint_every = 8
    seen = []
    run_training(tiny_toy_config, toy_data(), WorkerContext(), LoopHooks(checkpoint=lambda s, c, final: seen.append((s, final))))
    assert seen == [(8, False), (16, False), (20, True)]


def test_batch_must_divide_across_workers_and_fit_the_data(tiny_toy_config):
    with pytest.raises(ValueError, match="divisible"):
        run_training(tiny_toy_config, toy_data(), WorkerContext(rank=0, world_size=3), LoopHooks())
    with pytest.raises(ValueError, match="exceeds"):
        run_training(tiny_toy_config, toy_data(10), WorkerContext(), LoopHooks())


def test_time_budget_stops_early_with_a_final_checkpoint(tiny_toy_config):
    tiny_toy_config.train.iterations = 10_000
    tiny_toy_config.train.time_budget_s = 0.5
    seen = []
    result = run_training(tiny_toy_config, toy_data(), WorkerContext(), LoopHooks(checkpoint=lambda s, c, f: seen.append(f)))
    assert 0 < result.trainer.step_count < 10_000 and seen[-1] is True
    assert result.train_seconds >= 0.5
