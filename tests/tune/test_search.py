"""tune/search.py end to end: real local Ray, real `mlflow server` (the local_stack fixture), the tiny toy.

One 3-trial search with ASHA on tests/tune/tiny_space.yaml (two sane step multipliers and one broken, the
broken one sampled after the sane ones, so ASHA always has a sane result to stop it against), then the same
command again, which must resume the finished search instead of starting a new one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_TOY

REPO = Path(__file__).resolve().parents[2]
SPACE = "tests/tune/tiny_space.yaml"
pytestmark = [pytest.mark.slow, pytest.mark.ray]


def search(tmp_path: Path, env: dict, name: str, summary: Path) -> subprocess.CompletedProcess:
    """tune/search.py with its default --ray-address auto: it joins the cluster RAY_ADDRESS in ``env`` names."""
    proc = subprocess.run(
        [sys.executable, "tune/search.py", "--space", SPACE, "--num-samples", "1", "--max-concurrent", "2",
         "--name", name, "--best-out", str(tmp_path / "best.yaml"), "--summary", str(summary), *TINY_TOY,
         f"run.output_dir={tmp_path}", "tracking.experiment=tune-test"],
        cwd=REPO, capture_output=True, text=True, timeout=1100,
        env={**os.environ, **env, "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"},
    )
    if proc.returncode != 0:
        raise AssertionError(f"search.py failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def metric_steps(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_search_tracks_trials_in_mlflow_writes_best_config_and_resumes(ray_cluster, local_stack, tmp_path):
    from mlflow import MlflowClient

    first = tmp_path / "first.json"
    search(tmp_path, {**local_stack.env, **ray_cluster.driver_env}, "tiny", first)
    summary = json.loads(first.read_text())
    trials = {t["trial_id"]: t for t in summary["trials"]}
    assert summary["num_trials"] == 3 and not summary["interrupted"] and summary["num_errored"] == 0
    multipliers = sorted(t["params"]["langevin.step_multiplier"] for t in trials.values())
    assert multipliers == [1.0, 1.2, 30.0]
    stopped = [t for t in trials.values() if t["early_stopped"]]
    broken = [t for t in trials.values() if t["params"]["langevin.step_multiplier"] > 10]
    assert broken and all(t["early_stopped"] for t in broken)  # ASHA stopped it against a sane result
    assert all(t["train_seconds"] < 4 for t in stopped)  # before the budget
    best = summary["best"]
    assert best["params"]["langevin.step_multiplier"] in (1.0, 1.2) and 0 < best["metric"] <= 1

    # MLflow: one parent run for the search, one nested child per trial with its params and metric curves.
    client = MlflowClient(local_stack.mlflow_uri)
    experiment = client.get_experiment_by_name("tune-test")
    parent = client.get_run(summary["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["tune.search"] == "tiny"
    assert parent.data.metrics["tune/trials"] == 3 and parent.data.metrics["tune/early_stopped"] == len(stopped)
    assert parent.data.metrics["tune/best_objective"] == pytest.approx(best["objective"])
    assert parent.data.tags["tune.best_trial_id"] == best["trial_id"]
    assert parent.data.params["search.metric"] == "eval/in_support" and parent.data.params["search.budget_s"] == "4.0"
    assert {f.path for f in client.list_artifacts(parent.info.run_id, "best_config")} == {"best_config/best.yaml"}
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["tune.trial_id"] for c in children) == sorted(trials)
    histories = {}
    for child in children:
        trial = trials[child.data.tags["tune.trial_id"]]
        assert float(child.data.params["langevin.step_multiplier"]) == trial["params"]["langevin.step_multiplier"]
        assert child.data.params["ray.num_workers"] == "1" and child.data.params["tune.eval_every_s"] == "1.0"
        assert child.info.status == ("KILLED" if trial["early_stopped"] else "FINISHED")
        assert child.data.tags["tune.early_stopped"] == str(trial["early_stopped"]).lower()
        curve = metric_steps(client, child.info.run_id, "tune/objective")  # step = whole training seconds
        assert curve and all(0 <= step <= 6 for step, _ in curve)
        assert curve[-1][1] == pytest.approx(trial["objective"])
        histories[child.info.run_id] = metric_steps(client, child.info.run_id, "eval/in_support")
        assert histories[child.info.run_id] and "energy_loss" in child.data.metrics

    # The best config is a complete config that pipeline/train.py takes as it is.
    best_config = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best_config["langevin"]["step_multiplier"] == best["params"]["langevin.step_multiplier"]
    assert best_config["ray"]["num_workers"] == 2 and best_config["train"]["iterations"] == best["step"]
    dry = subprocess.run([sys.executable, "pipeline/train.py", "--config", str(tmp_path / "best.yaml"), "--dry-run"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "run:\n  name: tiny-best" in dry.stdout and "energy_net:" in dry.stdout

    # The same command again resumes the finished search: no new trials, no new runs, nothing retrained.
    second = tmp_path / "second.json"
    proc = search(tmp_path, {**local_stack.env, **ray_cluster.driver_env}, "tiny", second)
    assert "resuming search 'tiny'" in proc.stdout
    again = json.loads(second.read_text())
    assert sorted(t["trial_id"] for t in again["trials"]) == sorted(trials)
    assert again["mlflow"]["parent_run_id"] == parent.info.run_id and again["best"]["trial_id"] == best["trial_id"]
    children_after = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.info.run_id for c in children_after) == sorted(histories)
    for run_id, history in histories.items():
        assert metric_steps(client, run_id, "eval/in_support") == history
