"""`ray start --head` + `ray job submit --working-dir . -- python pipeline/train.py`, as the README says, with
the S3 and MLflow settings carried by --runtime-env-json (the head node itself has none of them).

The job is the full production path: 2 Ray Train workers read S3 shards, keep the last 2 of their S3
checkpoints, log metrics, system metrics and images to an `mlflow server` (artifacts proxied to S3), and the
driver registers the model; the registered champion then loads as a pyfunc and drives sample.py and
evaluate.py. Last, the same run from a driver that joins the head directly with the credentials in its own
environment only: one error line saying the cluster's workers need them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from tests.pipeline.test_ray_training import RAY_TOY
from tests.ray_head import BIN

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.ray]


def submit(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while the head's job agent has not registered yet (`ray start` returns first)."""
    for _ in range(12):
        job = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
        if "No available agent to submit job" not in job.stderr + job.stdout:
            return job
        time.sleep(5)
    return job


def test_ray_job_submit_s3_shards_s3_checkpoints_mlflow_server_and_registry(ray_cluster, local_stack, tmp_path):
    address, env = ray_cluster.dashboard_url, ray_cluster.env  # the head has no S3 or MLflow settings
    bucket, stack_env = local_stack.bucket, local_stack.env
    prep = subprocess.run([sys.executable, "pipeline/prepare_data.py", "--dataset", "8squares", "--num-points", "2000",
                           "--out", f"s3://{bucket}/data/toy", "--shards", "2"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, **stack_env}, timeout=300)
    assert prep.returncode == 0, prep.stderr
    runtime_env = {"env_vars": {**stack_env, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
                                "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}}
    summary_path = tmp_path / "summary.json"
    train_args = ["pipeline/train.py", *RAY_TOY, "run.name=s3run", "train.iterations=12", "train.checkpoint_every=4",
                  "run.keep_checkpoints=2", "eval.every=8", "eval.plot=true", f"run.output_dir={tmp_path}",
                  f"data.uri=s3://{bucket}/data/toy", f"run.storage_path=s3://{bucket}/ckpt"]
    job = submit([str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
                  "--runtime-env-json", json.dumps(runtime_env), "--",
                  "python", *train_args, "--summary", str(summary_path)], env)
    assert job.returncode == 0, job.stdout[-6000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout
    summary = json.loads(summary_path.read_text())
    assert summary["step"] == 12 and summary["num_workers"] == 2
    assert summary["checkpoint"].startswith(f"s3://{bucket}/ckpt/s3run/checkpoint_")
    assert summary["mlflow"]["tracking_uri"] == local_stack.mlflow_uri

    s3 = boto3.client("s3", endpoint_url=local_stack.s3_endpoint, aws_access_key_id=stack_env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=stack_env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="ckpt/s3run/")["Contents"]]
    checkpoints = sorted({k.split("/")[2] for k in keys if k.endswith("/checkpoint.pt")})
    assert len(checkpoints) == 2  # keep the last K = 2 of the checkpoints at steps 4, 8, 12
    assert summary["checkpoint"].removeprefix(f"s3://{bucket}/").split("/")[2] == checkpoints[-1]

    from mlflow import MlflowClient

    client = MlflowClient(local_stack.mlflow_uri)
    run = client.get_run(summary["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.iterations"] == "12" and run.data.params["ray.num_workers"] == "2"
    for metric in ("energy_loss", "initializer_loss", "energy_positive/level_1", "energy_negative/level_4",
                   "langevin_displacement/level_3", "grad_norm/energy_net", "lr/initializer", "samples_per_s",
                   "eval/in_support", "eval/mmd_bw1", "eval/cost_s", "eval/samples_per_s"):
        assert metric in run.data.metrics, metric
    assert [m.step for m in client.get_metric_history(run.info.run_id, "energy_loss")] == [4, 8, 12]
    assert run.data.tags["dataset_version"] == summary["dataset_version"]
    assert run.data.tags["checkpoint_uri"] == summary["checkpoint"]
    # MLflow's conventions: standard source tags set by the driver, the dataset as an input, system metrics
    # from rank 0, a model-training experiment.
    assert run.data.tags["mlflow.source.name"] == "pipeline/train.py" and run.data.tags["mlflow.source.type"] == "JOB"
    assert len(run.data.tags["mlflow.source.git.commit"]) in (40, len("unknown"))
    assert run.data.tags["cdrl.run_kind"] == "train" and run.info.run_name == "s3run"
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == summary["dataset_version"][:36]
    assert dataset_input.dataset.source_type == "s3" and f"s3://{bucket}/data/toy" in dataset_input.dataset.source
    assert {(t.key, t.value) for t in dataset_input.tags} == {("mlflow.data.context", "training")}
    assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics), sorted(run.data.metrics)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    images = [f.path for f in client.list_artifacts(run.info.run_id, "images/step_00000008")]
    assert {Path(p).name for p in images} == {"energy_landscape_step_00000008.png", "samples_step_00000008.png"}
    assert any(k.startswith("mlartifacts/") for k in
               (o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="mlartifacts/")["Contents"]))

    # The finished run registered one model version from the driver; it round-trips through the server's
    # proxied artifacts (S3), and sample.py / evaluate.py take it as models:/NAME@champion.
    import mlflow
    import pandas as pd

    registered = summary["registered_model"]  # the session's server may already hold versions of other tests' runs
    assert registered["name"] == "cdrl-8squares" and registered["version"].isdigit()
    version = client.get_model_version("cdrl-8squares", registered["version"])
    assert version.run_id == run.info.run_id and version.tags["dataset_version"] == summary["dataset_version"]
    assert version.tags["checkpoint_uri"] == summary["checkpoint"]
    client.set_registered_model_alias("cdrl-8squares", "champion", registered["version"])
    mlflow.set_tracking_uri(local_stack.mlflow_uri)
    model = mlflow.pyfunc.load_model("models:/cdrl-8squares@champion")
    assert model.predict(pd.DataFrame({"num_samples": [5], "steps_per_level": [1]})).shape == (5, 2)

    user_env = {**os.environ, **stack_env, "MLFLOW_TRACKING_URI": local_stack.mlflow_uri}
    out = tmp_path / "s.npy"
    proc = subprocess.run([sys.executable, "pipeline/sample.py", "--model", "models:/cdrl-8squares@champion",
                           "--num-samples", "16", "--out", str(out), "--steps-per-level", "1"],
                          cwd=REPO, capture_output=True, text=True, env=user_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert np.load(out).shape == (16, 2)
    report_path = tmp_path / "champion.json"
    proc = subprocess.run([sys.executable, "pipeline/evaluate.py", "--model", "models:/cdrl-8squares@champion",
                           "--num-samples", "200", "--workers", "0", "--json", str(report_path),
                           "--out-dir", str(tmp_path / "eval")],
                          cwd=REPO, capture_output=True, text=True, env=user_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    assert report["dataset_version"] == summary["dataset_version"] and report["step"] == 12
    assert report["primary_metric"]["name"] == "eval/in_support"

    # The same run from a driver that joins the head directly, the credentials in the driver's environment
    # only: the cluster's workers cannot read the shards, and the user gets one line saying why.
    direct = subprocess.run([sys.executable, *train_args, "run.name=direct"],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, **stack_env, **ray_cluster.driver_env})
    errors = [line for line in direct.stderr.splitlines() if line.startswith("error:")]
    assert direct.returncode == 2 and len(errors) == 1, direct.stderr[-4000:]
    assert f"s3://{bucket}/data/toy: the Ray workers cannot read the shards" in errors[0]
    assert "credentials" in errors[0] and "Traceback" not in errors[0]
