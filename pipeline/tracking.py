"""MLflow tracking: one MLflow run per training run, logged from world rank 0 only.

The driver resolves the tracking URI, checks that it answers, and creates (or, for a resumed run, finds)
the MLflow run; rank 0 of the workers logs metrics and images into it by run id.
"""
from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cdrl.config import Config, flatten

RUN_NAME_TAG = "cdrl.run_name"
SECRET_WORDS = ("secret", "password", "token", "access_key", "credential")


class TrackingError(RuntimeError):
    """MLflow cannot be used (unreachable server, bad URI); the message names the URI."""


def tracking_uri(config: Config) -> str:
    if config.tracking.uri:
        return config.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(config.run.output_dir).absolute() / 'mlflow.db'}"


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any training, when an http(s) tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow server at {uri} answered /health with HTTP {response.status}")
    except (urllib.error.URLError, OSError) as err:
        raise TrackingError(f"MLflow server at {uri} is unreachable ({getattr(err, 'reason', err)})") from err


def loggable_params(config: Config) -> dict[str, str]:
    """The full resolved config, flattened; never anything whose key looks like a secret."""
    params = {}
    for key, value in flatten(config.to_dict()).items():
        if any(word in key.lower() for word in SECRET_WORDS):
            continue
        params[key] = str(value)[:500]
    return params


def git_commit() -> str:
    """The checkout's commit; images without .git pass it as the GIT_COMMIT environment variable."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parents[1]).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_run(config: Config, tags: dict[str, str]) -> tuple[str, str]:
    """(tracking_uri, run_id): reuse the MLflow run of a resumed training run, else create one."""
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag

    uri = tracking_uri(config)
    check_reachable(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    if experiment is None:
        location = None
        if not uri.startswith(("http://", "https://")):
            location = (Path(config.run.output_dir).absolute() / "mlartifacts").as_uri()
        experiment_id = client.create_experiment(config.tracking.experiment, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    existing = client.search_runs([experiment_id], f"tags.`{RUN_NAME_TAG}` = '{config.run.name}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run_id = client.create_run(experiment_id, run_name=config.run.name, tags={RUN_NAME_TAG: config.run.name}).info.run_id
        params = [Param(k, v) for k, v in loggable_params(config).items()]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in {"git_commit": git_commit(), **tags}.items()])
    return uri, run_id


class RunLogger:
    """Rank 0's handle on the MLflow run: metrics per step and image artifacts."""

    def __init__(self, uri: str, run_id: str):
        from mlflow import MlflowClient

        self.client = MlflowClient(uri)
        self.run_id = run_id

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(entries), 1000):
            self.client.log_batch(self.run_id, metrics=entries[start : start + 1000])

    def log_artifact(self, path: str | Path, folder: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
