"""`ray start --head` + `ray job submit --working-dir . -- python pipeline/train.py`, as the README says,
with the S3 and MLflow settings carried by --runtime-env-json (the head node itself has none of them)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.local.processes import run_processes
from tests.conftest import TINY_TOY

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.ray]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path, ray_tmp):
    """A real Ray head node on free ports, started the way the README tells users to, in a Ray temp dir of
    its own; stopped by killing its own processes (``ray stop`` would stop every Ray on the machine, the
    developer's own clusters and any other test's included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_ADDRESS"))}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    env["RAY_TMPDIR"] = str(ray_tmp)
    # Ray 2.60 turns token authentication on for local clusters; the CLI needs the mode set to send the
    # token from ~/.ray/auth_token (created on first use). The README gives users the same export.
    env["RAY_AUTH_MODE"] = "token"
    token = subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], capture_output=True, env=env, timeout=60)
    assert token.returncode == 0, token.stderr
    dashboard = free_port()
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", f"--port={free_port()}", "--num-cpus=2", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", "--disable-usage-stats"],
        capture_output=True, text=True, env=env, timeout=180)
    assert start.returncode == 0, start.stderr
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        kill_processes(run_processes(f"RAY_TMPDIR={ray_tmp}"))


def kill_processes(pids: list[int]) -> None:
    """SIGKILL ``pids``, as ``ray stop --force`` does, but only these (the cluster's own processes)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_ray_job_submit_with_runtime_env(ray_head, local_stack, tmp_path):
    address, env = ray_head
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
