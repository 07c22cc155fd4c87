"""The local stack: real S3 (SeaweedFS) and a real MLflow server, through the API, the env vars and the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from pyarrow.fs import FileSystem

from infra.local.errors import StackError, StackStartError
from infra.local.network import free_port, free_port_pairs
from infra.local.processes import wait_until_ready
from infra.local.stack import LocalStack
from infra.local.state import STATE_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]


def use_env(monkeypatch: pytest.MonkeyPatch, stack: LocalStack) -> None:
    """Point every client in this process at ``stack`` for the current test."""
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)


# ----------------------------------------------------------------------- fast: start-up guards
def test_exit_during_start_raises_with_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["sh", "-c", "echo listening failed: boom; exit 3"], stdout=out)
    with pytest.raises(StackStartError, match="exited with code 3") as info:
        wait_until_ready(lambda: False, proc, "test server", log, timeout=30)
    assert "listening failed: boom" in info.value.log_tail
    assert "listening failed: boom" in str(info.value)


def test_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StackError, match=f"port {port} .*--s3-port"):
            LocalStack(tmp_path, s3_port=port, mlflow=False).start()
    assert not (tmp_path / "s3.log").exists()


def test_non_loopback_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="loopback"):
        LocalStack(tmp_path, host="0.0.0.0")


# ----------------------------------------------------------------------------- slow: S3
@pytest.mark.slow
def test_boto3_put_and_get_via_env(local_s3: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    use_env(monkeypatch, local_s3)
    s3 = boto3.session.Session().client("s3")  # a fresh session: the default one caches the first stack's keys
    s3.put_object(Bucket=local_s3.bucket, Key="tests/hello.txt", Body=b"hello stack")
    body = s3.get_object(Bucket=local_s3.bucket, Key="tests/hello.txt")["Body"].read()
    assert body == b"hello stack"


@pytest.mark.slow
def test_parquet_round_trip_via_pyarrow_from_uri(local_s3: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    use_env(monkeypatch, local_s3)
    table = pa.table({"step": [0, 1, 2], "energy": [1.5, -0.25, 3.0]})
    filesystem, path = FileSystem.from_uri(f"s3://{local_s3.bucket}/tests/round_trip.parquet")
    pq.write_table(table, path, filesystem=filesystem)
    assert pq.read_table(path, filesystem=filesystem).equals(table)


# ------------------------------------------------------------------------- slow: MLflow
@pytest.mark.slow
def test_mlflow_run_with_artifact_in_s3(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_env(monkeypatch, local_stack)
    client = MlflowClient(tracking_uri=local_stack.mlflow_uri)
    experiment_id = client.create_experiment(f"stack-test-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment_id).info.run_id
    artifact = tmp_path / "notes.txt"
    artifact.write_text("energy went down")

    client.log_param(run_id, "lr", "0.001")
    client.log_metric(run_id, "loss", 0.5, step=3)
    client.log_artifact(run_id, str(artifact))
    client.set_terminated(run_id)

    [metric] = client.get_metric_history(run_id, "loss")
    assert (metric.value, metric.step) == (0.5, 3)
    assert client.get_run(run_id).data.params == {"lr": "0.001"}
    downloaded = client.download_artifacts(run_id, "notes.txt", str(tmp_path / "download"))
    assert Path(downloaded).read_text() == "energy went down"

    prefix = f"mlartifacts/{experiment_id}/{run_id}/"
    listing = boto3.session.Session().client("s3").list_objects_v2(Bucket=local_stack.bucket, Prefix=prefix)
    assert [obj["Key"] for obj in listing.get("Contents", [])] == [f"{prefix}artifacts/notes.txt"]


# ---------------------------------------------------------------------------- slow: CLI
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [sys.executable, "-m", "infra.local", *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_cli_up_status_down(tmp_path: Path) -> None:
    stack_dir = tmp_path / "stack"
    [s3_port] = free_port_pairs("127.0.0.1", 1, taken=set())
    mlflow_port = free_port("127.0.0.1")
    up = run_cli("up", "--dir", str(stack_dir), "--s3-port", str(s3_port), "--mlflow-port", str(mlflow_port))
    try:
        assert up.returncode == 0, up.stderr
        assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{s3_port}" in up.stdout.splitlines()
        assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{mlflow_port}" in up.stdout.splitlines()
        pids = json.loads((stack_dir / STATE_FILE).read_text())["pids"]

        status = run_cli("status", "--dir", str(stack_dir))
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("answers") == 2
    finally:
        down = run_cli("down", "--dir", str(stack_dir))
    assert down.returncode == 0, down.stderr
    assert not any(group_exists(pgid) for pgid in pids.values())
    assert run_cli("status", "--dir", str(stack_dir)).returncode == 1
