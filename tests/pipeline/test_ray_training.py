"""Ray Train integration: real local Ray (2 CPU workers), real SeaweedFS S3, real MLflow server.

Each run is `python pipeline/train.py` in a subprocess, exactly as a user runs it, on a cluster: the session's
Ray head (the ``ray_cluster`` fixture), which they join through RAY_ADDRESS. The S3 + MLflow server + registry
run is `ray job submit` (tests/pipeline/test_ray_job_submit.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cdrl.checkpoint import load_checkpoint
from tests.conftest import TINY_TOY
from tests.ray_head import RayHead

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.ray]

# 2 workers × 0.5 CPU leaves a core for Ray Data on a 2-core machine.
RAY_TOY = [*TINY_TOY, "ray.num_workers=2", "ray.cpus_per_worker=0.5", "train.log_every=4", "eval.num_samples=200"]


def train(tmp_path: Path, cluster: RayHead, *overrides: str, env: dict | None = None) -> dict:
    """`pipeline/train.py` on the cluster; its --summary, or the failure's output as the assertion message."""
    summary = tmp_path / f"summary-{len(list(tmp_path.glob('summary-*')))}.json"
    proc = subprocess.run(
        [sys.executable, "pipeline/train.py", *RAY_TOY, f"run.output_dir={tmp_path}", *overrides, "--summary", str(summary)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
             **cluster.driver_env, **(env or {})},
    )
    if proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return json.loads(summary.read_text())


def final_state(summary: dict) -> list[torch.Tensor]:
    state = load_checkpoint(summary["checkpoint"])["trainer"]
    tensors = [t for net in state["nets"].values() for t in net.values()]
    return tensors + [s for ema in state["emas"].values() for s in ema["shadow"]]


def test_resume_and_crash_recovery_equal_a_straight_run(ray_cluster, tmp_path):
    """N steps, then a resubmission to 2N during which a worker is killed, == 2N straight: resuming a run by
    name and recovering from a crashed worker (Ray Train restarts the group from the step-8 checkpoint) cost
    no steps and no state."""
    common = ["tracking.enabled=false", "train.checkpoint_every=4"]
    straight = train(tmp_path, ray_cluster, *common, "run.name=straight", "train.iterations=12")
    half = train(tmp_path, ray_cluster, *common, "run.name=resumed", "train.iterations=6")
    assert half["step"] == 6
    resumed = train(tmp_path, ray_cluster, *common, "run.name=resumed", "train.iterations=12",
                    "ray.inject_crash_at_step=9", "ray.max_failures=1")
    assert resumed["step"] == 12
    assert (tmp_path / "resumed" / ".crash_injected_at_9").exists()
    for a, b in zip(final_state(straight), final_state(resumed)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_class_conditional_image_nets_on_two_workers_with_digits_fid(ray_cluster, local_stack, tmp_path):
    """UNet + ResNet energy net under DDP, labels with dropout, digits shards prepared from the built-in set;
    digits-FID from both workers' samples logged to the MLflow server during training, then evaluate.py
    on the checkpoint (two Ray tasks) reproduces the final FID with the same protocol."""
    summary = train(tmp_path, ray_cluster, "--config", "pipeline/configs/digits.yaml", "run.name=digits",
                    "train.iterations=4", "train.batch_size=16", "model.num_classes=10", "model.energy_net.base_channels=8",
                    "model.initializer.base_channels=16", "eval.num_samples=10", "generation.batch_size=4",
                    "eval.every=2", "data.name=digits", "langevin.num_steps=2", "registry.enabled=false",
                    f"tracking.uri={local_stack.mlflow_uri}", env=local_stack.env)
    assert summary["step"] == 4 and summary["metrics"]["sample_nan_fraction"] == 0.0
    final_fid = summary["metrics"]["fid/digits_10"]
    assert np.isfinite(final_fid) and final_fid > 0

    from mlflow import MlflowClient

    client = MlflowClient(local_stack.mlflow_uri)
    run_id = summary["mlflow"]["run_id"]
    history = client.get_metric_history(run_id, "fid/digits_10")
    assert [m.step for m in history] == [2, 4] and history[-1].value == pytest.approx(final_fid, rel=1e-12)
    assert [m.step for m in client.get_metric_history(run_id, "eval/cost_s")] == [2, 4]
    grids = [f.path for f in client.list_artifacts(run_id, "images/step_00000002")]
    assert [Path(p).name for p in grids] == ["samples_step_00000002.png"]

    data_dir = next((tmp_path / "data").iterdir())
    assert json.loads((data_dir / "manifest.json").read_text())["reference_stats"] == {"digits": "stats/digits.npz"}
    report_path = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "pipeline/evaluate.py", "--model", summary["checkpoint"], "--workers", "2",
                           "--json", str(report_path), "--out-dir", str(tmp_path / "evaluate"),
                           "--tracking-uri", local_stack.mlflow_uri, "--log-to", run_id],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **ray_cluster.driver_env,
                               **local_stack.env})
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["workers"] == 2 and report["dataset_version"] == summary["dataset_version"]
    assert report["primary_metric"]["name"] == "fid/digits_10" and report["primary_metric"]["higher_is_better"] is False
    assert report["primary_metric"]["value"] == pytest.approx(final_fid, rel=1e-4)
    assert report["protocol"]["reference_stats"]["num_images"] == 1797
    assert [m.step for m in client.get_metric_history(run_id, "fid/digits_10")] == [2, 4, 4]  # --log-to the run

    out = tmp_path / "digits.npy"
    proc = subprocess.run([sys.executable, "pipeline/sample.py", "--checkpoint", summary["checkpoint"], "--num-samples", "4",
                           "--out", str(out), "--label", "3", "--guidance", "1.0", "--steps-per-level", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert np.load(out).shape == (4, 1, 8, 8)
