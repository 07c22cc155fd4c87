"""The training health guard, provoked with absurd learning rates and step sizes (in-process, no Ray)."""
from __future__ import annotations

import json

import pytest
import torch

from cdrl.checkpoint import load_checkpoint
from cdrl.config import load_config
from cdrl.factory import build_levels, build_nets, build_trainer
from cdrl.health import HealthLimits
from pipeline.health_guard import TrainingDiverged
from pipeline.local_backend import train_locally
from pipeline.run_data import dataset_for_run
from tests.conftest import TINY_TOY


def run_local(tmp_path, *overrides):
    config = load_config(None, [*TINY_TOY, f"run.output_dir={tmp_path}", "run.name=guard", "train.iterations=30",
                                "train.checkpoint_every=10", *overrides])
    return config, train_locally(config, *dataset_for_run(config))


def events(tmp_path) -> list[dict]:
    lines = (tmp_path / "guard" / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if "health_event" in e]


def test_absurd_learning_rate_rolls_back_with_a_lower_rate_and_recovers(tmp_path):
    config, summary = run_local(tmp_path, "train.energy_lr=100", "train.initializer_lr=100", "train.energy_warmup=1",
                                "train.initializer_warmup=1", "health.lr_scale=1e-4")
    assert summary.step == 30
    kinds = [e["health_event"] for e in events(tmp_path)]
    assert kinds.count("rollback") == 1 and kinds.count("skip") >= config.health.skip_limit
    assert "diverged" not in kinds
    state = load_checkpoint(summary.checkpoint)
    assert state["extra"]["health"]["rollbacks"] == 1
    for name in ("energy_net", "initializer"):
        assert state["trainer"]["schedules"][name]["base_lrs"] == [pytest.approx(100 * 1e-4)]
    assert all(torch.isfinite(p).all() for net in state["trainer"]["nets"].values() for p in net.values())


def test_absurd_langevin_step_stops_with_a_clear_error(tmp_path):
    with pytest.raises(TrainingDiverged) as info:
        run_local(tmp_path, "langevin.step_multiplier=1e3", "health.skip_limit=2", "health.max_rollbacks=1")
    message = str(info.value)
    assert message.startswith("training diverged: 2 bad steps in a row at step 2 after 1 rollback(s)")
    assert "(health.max_rollbacks=1)" in message and "langevin_displacement at level 1 = " in message
    assert [e["health_event"] for e in events(tmp_path)] == ["skip", "skip", "rollback", "skip", "skip", "diverged"]
    assert not list((tmp_path / "guard" / "checkpoints").glob("step_*.pt"))  # nothing diverged was saved


def test_a_skipped_step_changes_no_weights_optimizer_state_or_ema(tiny_toy_config):
    torch.manual_seed(0)
    trainer = build_trainer(tiny_toy_config, build_nets(tiny_toy_config, (2,)), build_levels(tiny_toy_config))
    trainer.step(torch.randn(64, 2) * 4)
    before = trainer.state_dict()
    before = {"nets": {k: {n: t.clone() for n, t in v.items()} for k, v in before["nets"].items()},
              "ema": [s.clone() for s in trainer.emas["energy_net"].shadow]}
    trainer.health = HealthLimits(max_abs_energy=1e-12)  # every energy is "too large"
    trainer.step(torch.randn(64, 2) * 4)
    assert trainer.step_count == 2 and any("energy at level" in p for p in trainer.last_problems)
    for name, net in trainer.state_dict()["nets"].items():
        for key, value in net.items():
            if not key.endswith(("_u", "_v")):  # spectral-norm power iteration runs in the forward pass
                assert torch.equal(value, before["nets"][name][key]), key
    assert all(torch.equal(a, b) for a, b in zip(trainer.emas["energy_net"].shadow, before["ema"]))
    assert trainer.emas["energy_net"].num_updates == 1


def test_without_the_guard_a_non_finite_loss_raises(tiny_toy_config):
    tiny_toy_config.health.enabled = False
    tiny_toy_config.langevin.step_multiplier = 1e6
    trainer = build_trainer(tiny_toy_config, build_nets(tiny_toy_config, (2,)), build_levels(tiny_toy_config))
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        for _ in range(3):
            trainer.step(torch.randn(64, 2) * 4)


@pytest.mark.slow
@pytest.mark.ray
def test_divergence_on_ray_is_one_error_line_and_tracked_in_mlflow(tmp_path, ray_cluster):
    """2 Ray workers skip together, then stop; the events are MLflow metrics and tags; exit 1, one line."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mlflow import MlflowClient

    from tests.pipeline.test_ray_training import RAY_TOY

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "pipeline/train.py", *RAY_TOY, f"run.output_dir={tmp_path}", "run.name=diverges",
         "train.iterations=20", "langevin.step_multiplier=1e3", "health.skip_limit=2", "health.max_rollbacks=1"],
        cwd=repo, capture_output=True, text=True, timeout=600,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
             **ray_cluster.driver_env})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert len(errors) == 1 and errors[0].startswith("error: training diverged: 2 bad steps in a row"), \
        proc.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("cdrl").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["cdrl.failure"].startswith("training diverged")
    assert "skipped" in run.data.tags["health.last_skip"] and "rollback 1" in run.data.tags["health.last_rollback"]
    assert run.data.tags["health.last_diverged"].startswith("training diverged")
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "health/event_skip")) == [1, 1, 2, 2]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "health/event_rollback")] == [1.0]
