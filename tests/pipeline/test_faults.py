"""Fault injection on the real stack: Ray Train (2 workers), SeaweedFS S3 and an `mlflow server`.

One training run name goes through every fault in turn, so the Ray start-up cost is paid three times only:

1. MLflow stopped, then S3 too for 60 s mid-run, then both restarted: the run rides it out (checkpoint uploads retry
   with backoff, MLflow writes are buffered) and ends at its target step with no resubmit, every metric in
   MLflow and every checkpoint in S3 complete. The embedded Ray listens on loopback only.
2. The newest checkpoint is truncated in S3 and the run resubmitted: it warns, resumes from the previous
   one; then its driver is killed (SIGKILL to the process group).
3. Resubmitted with the same run name: resumes from the newest checkpoint, the orphaned MLflow run is ended
   as KILLED and tagged; then S3 is stopped for longer than ``faults.storage_wait_s``: the run ends with
   one `error:` line naming the endpoint, and its MLflow run is FAILED.
Finally a planted secret (the stack's S3 secret key) appears in none of the params, tags, artifacts,
outputs, summaries, error lines or run files.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import numpy as np
import pytest
from mlflow import MlflowClient

from cdrl.checkpoint import verify
from tests.pipeline.test_ray_training import RAY_TOY
from tests.ray_head import BIN
from infra.local.processes import run_processes
from tests.sockets import is_loopback, listening_addresses
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.waits]

OUTAGE_S = 60
ITERATIONS, CHECKPOINT_EVERY = 120, 20
MAX_OUTAGE_S = 240  # far inside faults.storage_wait_s (600 s by default)
RUN = "faults"
# Short MLflow client retries (its defaults retry for minutes): the 60 s outage outlasts them many times.
MLFLOW_CLIENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
MLFLOW_RETRY_LINE = "Retrying (Retry("  # urllib3's line for each retried MLflow request


def start_train(tmp_path: Path, ray_tmp: Path, stack, phase: str, *overrides: str) -> tuple[subprocess.Popen, Path, Path]:
    out, err = tmp_path / f"{phase}.out", tmp_path / f"{phase}.err"
    env = {**os.environ, **stack.env, **MLFLOW_CLIENT, "RAY_TMPDIR": str(ray_tmp),
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "pipeline/train.py", *RAY_TOY, f"run.output_dir={tmp_path}", f"run.name={RUN}",
               f"data.uri=s3://{stack.bucket}/data/{RUN}", f"run.storage_path=s3://{stack.bucket}/ckpt",
               f"tracking.uri={stack.mlflow_uri}", "tracking.experiment=faults", "train.log_every=2",
               f"train.checkpoint_every={CHECKPOINT_EVERY}", "run.keep_checkpoints=2", "langevin.num_steps=15",
               *overrides, "--summary", str(tmp_path / f"{phase}.json")]
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    STARTED.append(proc)
    return proc, out, err


STARTED: list[subprocess.Popen] = []


def kill_started() -> None:
    """A failed assertion must not leave a training run (and its Ray) behind."""
    for proc in STARTED:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    STARTED.clear()


def process_name(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().strip()


def checkpoints(s3, bucket: str) -> dict[str, dict]:
    """folder name → integrity record, for the complete checkpoints of the run in S3."""
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"ckpt/{RUN}/").get("Contents", [])
    records = {}
    for key in (o["Key"] for o in listing if o["Key"].endswith("checkpoint.pt.sha256")):
        records[key.split("/")[2]] = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return dict(sorted(records.items()))


def running(proc: subprocess.Popen) -> Callable[[], bool]:
    return lambda: proc.poll() is None


def run_state(err: Path, ray_tmp: Path) -> Callable[[], str]:
    """What a failed wait shows: the end of train.py's stderr without the MLflow client's retry lines (they
    fill it while MLflow is down), and where the run's Ray Train processes are (their Python stacks)."""
    def state() -> str:
        lines = [line for line in err.read_text().splitlines() if MLFLOW_RETRY_LINE not in line]
        return "train.py's stderr ends:\n" + "\n".join(lines[-40:]) + "\n" + ray_train_stacks(ray_tmp)
    return state


def ray_train_stacks(ray_tmp: Path) -> str:
    """py-spy dumps (py-spy comes with ray[default]) of the Ray Train controller and workers under ``ray_tmp``."""
    dumps = []
    for pid in run_processes(f"RAY_TMPDIR={ray_tmp}"):
        try:
            name = process_name(pid)
        except OSError:  # gone meanwhile
            continue
        if name.startswith(("ray::TrainController", "ray::RayTrainWorker")):
            dump = subprocess.run([str(BIN / "py-spy"), "dump", "--pid", str(pid)],
                                  capture_output=True, text=True, timeout=60)
            dumps.append(f"--- {name} (pid {pid}):\n{dump.stdout or dump.stderr}")
    return "\n".join(dumps)


def logged_steps(client: MlflowClient, experiment: str) -> list[int]:
    """The steps of ``energy_loss`` the experiment's first run has in MLflow (none before the run exists)."""
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return [m.step for m in client.get_metric_history(runs[0].info.run_id, "energy_loss")] if runs else []


def finish(proc: subprocess.Popen, timeout: float = 400) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def test_outages_corruption_driver_loss_and_secrets(local_stack, tmp_path, ray_tmp, monkeypatch):
    for key, value in local_stack.env.items():
        monkeypatch.setenv(key, value)
    from pipeline.datasets.catalog import open_source
    from pipeline.datasets.writer import write_dataset

    bucket = local_stack.bucket
    # The workers read the shards into memory once, at the start: during the outage the run's S3 operations are
    # checkpoint writes.
    write_dataset(open_source("8squares", num_points=4000, seed=0), f"s3://{bucket}/data/{RUN}", num_shards=2)
    s3 = boto3.client("s3", endpoint_url=local_stack.s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=local_stack.access_key, aws_secret_access_key=local_stack.secret_key)
    client = MlflowClient(local_stack.mlflow_uri)
    servers_down: list[str] = []
    try:
        # ------------------------------------------- 1. MLflow down, then S3 too for 60 s
        # MLflow goes first, once the run logs to it, and stays down until S3 is back: its buffering is then
        # exercised whatever the timing (with both stopped at once, a run blocked on S3 may log nothing).
        # S3 goes at the first checkpoint, whose upload the test sees; stopping it takes seconds, in which a quick
        # machine trains 20-40 steps: ITERATIONS leaves 100, so a later checkpoint meets the outage, never the
        # run's last step (there the run first waits for MLflow to take the buffered metrics and images, and the
        # images reach S3 through the MLflow server: with both down it would wait faults.tracking_flush_s).
        proc, out, err = start_train(tmp_path, ray_tmp, local_stack, "outage", f"train.iterations={ITERATIONS}")
        wait_for(lambda: logged_steps(client, "faults"), "the first metrics in MLflow", 300, running(proc),
                 run_state(err, ray_tmp))
        local_stack.stop_server("mlflow")
        servers_down.append("mlflow")
        wait_for(lambda: "metrics are buffered" in err.read_text(), "MLflow writes buffered", 300, running(proc),
                 run_state(err, ray_tmp))
        wait_for(lambda: checkpoints(s3, bucket), "the first checkpoint", 300, running(proc), run_state(err, ray_tmp))
        local_stack.stop_server("s3")
        servers_down.append("s3")
        ray_pids = run_processes(f"RAY_TMPDIR={ray_tmp}")
        listening = listening_addresses(ray_pids)
        # Down for OUTAGE_S and until storage has noticed (a loaded machine may not reach the next checkpoint inside
        # OUTAGE_S); bounded well inside the default storage wait (600 s), so the run must still ride it out.
        stopped_at = time.monotonic()
        wait_for(lambda: time.monotonic() - stopped_at >= OUTAGE_S and "retrying for up to" in err.read_text(),
                 "the S3 outage to last OUTAGE_S and be seen by storage", MAX_OUTAGE_S, running(proc),
                 run_state(err, ray_tmp))
        for name in ("s3", "mlflow"):
            local_stack.start_server(name)
            servers_down.remove(name)
        assert finish(proc) == 0, err.read_text()[-5000:]
        summary = json.loads((tmp_path / "outage.json").read_text())
        assert summary["step"] == ITERATIONS and summary["mlflow_unsent_metrics"] == 0
        stderr = err.read_text()
        assert "retrying for up to" in stderr and "answers again" in stderr  # storage waited, then went on
        assert "metrics are buffered" in stderr  # MLflow's outage outlasted its client's retries
        run = client.get_run(summary["mlflow"]["run_id"])
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "energy_loss")]
        assert steps == list(range(2, ITERATIONS + 1, 2))
        records = checkpoints(s3, bucket)
        assert [r["step"] for r in records.values()] == [ITERATIONS - CHECKPOINT_EVERY, ITERATIONS]
        for name in records:  # every checkpoint in S3 is complete and verifies
            payload = s3.get_object(Bucket=bucket, Key=f"ckpt/{RUN}/{name}/checkpoint.pt")["Body"].read()
            record = s3.get_object(Bucket=bucket, Key=f"ckpt/{RUN}/{name}/checkpoint.pt.sha256")["Body"].read()
            verify(payload, record, name)
        # Every Ray server listens on loopback. The one exception is torch.distributed's rendezvous store
        # (TCPStore), which rank 0's Ray Train worker hosts on all interfaces: torch has no bind address.
        exposed = [(pid, ip, port) for pid in ray_pids for ip, port in listening_addresses([pid])
                   if not is_loopback(ip)]
        assert ray_pids and len(listening) >= 5
        assert len(exposed) <= 1 and all(process_name(pid) == "ray::RayTrainWorker" for pid, _, _ in exposed), exposed

        # ---------------------------------------------------- 2. newest checkpoint truncated; driver killed
        newest = list(records)[-1]
        key = f"ckpt/{RUN}/{newest}/checkpoint.pt"
        payload = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=bucket, Key=key, Body=payload[: len(payload) // 2])
        proc, out, err = start_train(tmp_path, ray_tmp, local_stack, "killed", "train.iterations=100000")
        wait_for(lambda: any(r["step"] == ITERATIONS for n, r in checkpoints(s3, bucket).items() if n != newest),
                 "a checkpoint written after resuming from the previous one", 300, running(proc),
                 run_state(err, ray_tmp))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        stderr = err.read_text()
        assert f"{newest}/checkpoint.pt: " in stderr and "falling back to the previous checkpoint" in stderr
        assert f"resuming {RUN} from s3://{bucket}/ckpt/{RUN}/checkpoint_" in out.read_text()
        assert f"(step {ITERATIONS - CHECKPOINT_EVERY})" in out.read_text()
        orphan = client.get_run(summary["mlflow"]["run_id"])
        assert orphan.info.status == "RUNNING"  # nobody could mark it: the driver is gone

        # ------------------------------------- 3. resubmitted: resumes, orphan marked; then S3 gone for good
        proc, out, err = start_train(tmp_path, ray_tmp, local_stack, "resubmit", "train.iterations=100000",
                                     "faults.storage_wait_s=4", "ray.max_failures=0")
        resumed = wait_for(lambda: re.search(r"resuming faults from \S+ \(step (\d+)\)", out.read_text()),
                           "the resume line", 600, running(proc), run_state(err, ray_tmp))
        assert int(resumed.group(1)) >= ITERATIONS
        local_stack.stop_server("s3")
        servers_down.append("s3")
        assert finish(proc) == 1, err.read_text()[-5000:]
        errors = [line for line in err.read_text().splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and local_stack.s3_endpoint in errors[0] and "unreachable for 4 s" in errors[0], errors
        assert "Traceback" not in errors[0]
        local_stack.start_server("s3")
        servers_down.remove("s3")
        orphan = client.get_run(summary["mlflow"]["run_id"])
        assert orphan.info.status == "KILLED" and "driver lost" in orphan.data.tags["cdrl.orphaned"]
        [successor] = [r for r in client.search_runs([run.info.experiment_id])
                       if r.data.tags.get("cdrl.resumed_from_run") == orphan.info.run_id]
        assert successor.info.status == "FAILED" and local_stack.s3_endpoint in successor.data.tags["cdrl.failure"]
    finally:
        kill_started()
        for name in servers_down:
            local_stack.start_server(name)

    # ------------------------------------------------------------------------- 4. the planted secret
    secret = local_stack.secret_key.encode()
    assert len(secret) >= 24
    places: dict[str, bytes] = {}
    for mlflow_run in client.search_runs([run.info.experiment_id]):
        places[f"mlflow params/tags {mlflow_run.info.run_id}"] = json.dumps(
            [mlflow_run.data.params, mlflow_run.data.tags, sorted(mlflow_run.data.metrics)]).encode()
        folder = client.download_artifacts(mlflow_run.info.run_id, "", str(tmp_path / "artifacts" / mlflow_run.info.run_id))
        for path in Path(folder).rglob("*"):
            if path.is_file():
                places[f"artifact {path}"] = path.read_bytes()
    for path in list(tmp_path.glob("*.out")) + list(tmp_path.glob("*.err")) + list(tmp_path.glob("*.json")):
        places[str(path)] = path.read_bytes()  # stdout, stderr (with the error lines), summaries
    for path in (tmp_path / RUN).rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes()  # samples, plots, unsent-metrics file
    for path in ray_tmp.rglob("*.log"):
        places[str(path)] = path.read_bytes()  # Ray's own worker and driver logs
    assert len(places) > 10
    leaks = [where for where, content in places.items() if secret in content]
    assert not leaks, leaks
    assert np.isfinite(np.load(tmp_path / RUN / "samples_final.npy")).all()
