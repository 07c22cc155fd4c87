"""`ray start --head` + `ray job submit --working-dir . -- python pipeline/train.py`, as the README says,
with the S3 and MLflow settings carried by --runtime-env-json (the head node itself has none of them)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_TOY
from tests.ray_head import BIN

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_ray_job_submit_with_runtime_env(ray_cluster, local_stack, tmp_path):
    address, env = ray_cluster.dashboard_url, ray_cluster.env  # the head has no S3 or MLflow settings
    prep = subprocess.run([sys.executable, "pipeline/prepare_data.py", "--dataset", "8squares", "--num-points", "1000",
                           "--out", f"s3://{local_stack.bucket}/data/job-toy"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, **local_stack.env}, timeout=300)
    assert prep.returncode == 0, prep.stderr
    runtime_env = {"env_vars": {**local_stack.env, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}}
    summary = tmp_path / "summary.json"
    command = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
               "--runtime-env-json", json.dumps(runtime_env), "--",
               "python", "pipeline/train.py", "--config", "pipeline/configs/toy.yaml", *TINY_TOY,
               "ray.cpus_per_worker=0.5", "train.iterations=8", "run.name=job", f"run.output_dir={tmp_path}",
               f"data.uri=s3://{local_stack.bucket}/data/job-toy",
               f"run.storage_path=s3://{local_stack.bucket}/job-ckpt", "--summary", str(summary)]
    for _ in range(12):  # `ray start` returns before the head's job agent has registered; no job exists until then
        job = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
        if "No available agent to submit job" not in job.stderr + job.stdout:
            break
        time.sleep(5)
    assert job.returncode == 0, job.stdout[-6000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout
    result = json.loads(summary.read_text())
    assert result["step"] == 8 and result["checkpoint"].startswith(f"s3://{local_stack.bucket}/job-ckpt/job/")
    assert result["mlflow"]["tracking_uri"] == local_stack.mlflow_uri

    # The same run from a driver that joins the head directly, the credentials in the driver's environment
    # only: the cluster's workers cannot read the shards, and the user gets one line saying why.
    direct = subprocess.run([sys.executable, *command[command.index("pipeline/train.py"):], "run.name=direct"],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, **local_stack.env, **ray_cluster.driver_env})
    errors = [line for line in direct.stderr.splitlines() if line.startswith("error:")]
    assert direct.returncode == 2 and len(errors) == 1, direct.stderr[-4000:]
    assert f"s3://{local_stack.bucket}/data/job-toy: the Ray workers cannot read the shards" in errors[0]
    assert "credentials" in errors[0] and "Traceback" not in errors[0]
