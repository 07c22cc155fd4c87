"""MLflow tracking: one MLflow run per training run, logged from world rank 0 only.

The driver resolves the tracking URI, checks that it answers, and creates (or, for a resumed run, finds)
the MLflow run; rank 0 of the workers logs metrics and images into it by run id.

Conventions, the same on every run so that runs compare side by side in the MLflow UI:
- run name = ``run.name`` (also tag ``cdrl.run_name``); tags ``cdrl.run_kind`` (train, retrain),
  ``cdrl.dataset``, ``dataset_version``, ``data_uri``, ``checkpoint_uri`` once finished;
- MLflow's standard tags set explicitly (``mlflow.source.name/type/git.commit/git.branch/git.repoURL``,
  ``mlflow.user``): inside Ray workers MLflow would fill them from Ray's worker script;
- metrics: losses and per-level curves by step (``energy_loss``, ``energy_positive/level_t``, ...),
  evaluation under ``eval/...`` and ``fid/EXTRACTOR_N``, images under ``images/step_XXXXXXXX/``,
  system metrics (``system/...``) from rank 0;
- the dataset is a run input (name, source URI, digest = its content version id), not loaded;
- the experiment is tagged ``mlflow.experimentKind=custom_model_development`` (a model-training experiment).
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
RUN_KIND_TAG = "cdrl.run_kind"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
SYSTEM_METRICS_INTERVAL_S = 10.0
ORPHANED_TAG = "cdrl.orphaned"
RESUMED_FROM_TAG = "cdrl.resumed_from_run"
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


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit() -> str:
    """The checkout's commit; images without .git pass it as the GIT_COMMIT environment variable."""
    return os.environ.get("GIT_COMMIT") or _git("rev-parse", "HEAD") or "unknown"


def source_tags(entry_point: str) -> dict[str, str]:
    """MLflow's standard ``mlflow.source.*`` and ``mlflow.user`` tags for a run started by ``entry_point``."""
    import getpass

    tags = {"mlflow.source.name": entry_point, "mlflow.source.type": "JOB", "mlflow.source.git.commit": git_commit()}
    branch = os.environ.get("GIT_BRANCH") or _git("rev-parse", "--abbrev-ref", "HEAD")
    repo_url = os.environ.get("GIT_REPO_URL") or _git("config", "--get", "remote.origin.url")
    if branch and branch != "HEAD":
        tags["mlflow.source.git.branch"] = branch
    if repo_url:
        tags["mlflow.source.git.repoURL"] = repo_url
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        pass
    return tags


def experiment_id_for(client, config: Config, uri: str) -> str:
    """The experiment ``tracking.experiment``, created if missing, tagged as a model-training experiment."""
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    if experiment is None:
        location = None
        if not uri.startswith(("http://", "https://")):
            location = (Path(config.run.output_dir).absolute() / "mlartifacts").as_uri()
        return client.create_experiment(config.tracking.experiment, artifact_location=location, tags=EXPERIMENT_KIND)
    for key, value in EXPERIMENT_KIND.items():
        if key not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def log_dataset_input(client, run_id: str, data_uri: str, manifest) -> None:
    """Record the dataset as the run's training input: name, source URI, digest = the manifest's content version
    (MLflow keeps 36 characters of it), item schema; no data is read."""
    import numpy as np
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types import Schema, TensorSpec

    schema = Schema([TensorSpec(np.dtype(manifest.dtype), (-1, *manifest.item_shape), name="data")])
    from mlflow.exceptions import MlflowException

    dataset = MetaDataset(source=resolve_dataset_source(data_uri), name=manifest.dataset, digest=manifest.version[:36],
                          schema=schema)
    inputs = [DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException as err:
        # MLflow looks the dataset up, then inserts it: runs starting together (Tune trials) race for the insert and
        # all but one hit the unique key. The row exists now, so logging again only links this run to it.
        if "unique constraint" not in str(err).lower():
            raise
        client.log_inputs(run_id, datasets=inputs)


def start_run(config: Config, tags: dict[str, str], entry_point: str = "pipeline/train.py", kind: str = "train",
              dataset: tuple[str, Any] | None = None) -> tuple[str, str]:
    """(tracking_uri, run_id): reuse the MLflow run of a resumed training run, else create one.

    ``dataset`` = (data_uri, manifest) is logged as the run's input once, when the run is created."""
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag

    uri = tracking_uri(config)
    check_reachable(uri)
    client = MlflowClient(uri)
    experiment_id = experiment_id_for(client, config, uri)
    existing = client.search_runs([experiment_id], f"tags.`{RUN_NAME_TAG}` = '{config.run.name}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    orphan = existing[0] if existing and existing[0].info.status == "RUNNING" else None
    if existing and orphan is None:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run_tags = {RUN_NAME_TAG: config.run.name, RUN_KIND_TAG: kind, "cdrl.dataset": config.data.name}
        run_id = client.create_run(experiment_id, run_name=config.run.name, tags=run_tags).info.run_id
        params = [Param(k, v) for k, v in loggable_params(config).items()]
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=params[start : start + 100])
        if dataset is not None:
            log_dataset_input(client, run_id, *dataset)
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in {**source_tags(entry_point), **tags}.items()])
    if orphan is not None:
        mark_orphaned(client, orphan.info.run_id, run_id)
    return uri, run_id


def mark_orphaned(client, orphan_id: str, successor_id: str) -> None:
    """A run still RUNNING when its training run is submitted again lost its driver (killed, node lost):
    end it as KILLED, tagged with the run that resumes it; the successor is tagged with where it came from."""
    client.set_tag(orphan_id, ORPHANED_TAG, f"driver lost; the training run resumed in MLflow run {successor_id}")
    client.set_terminated(orphan_id, status="KILLED")
    client.set_tag(successor_id, RESUMED_FROM_TAG, orphan_id)


class RunLogger:
    """Rank 0's handle on the MLflow run: metrics per step and image artifacts."""

    def __init__(self, uri: str, run_id: str):
        from mlflow import MlflowClient

        self.client = MlflowClient(uri)
        self.uri, self.run_id = uri, run_id
        self.system_metrics = None

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

    def start_system_metrics(self) -> None:
        """CPU, memory, disk, network (and GPU with nvidia-ml-py) as ``system/...`` metrics, every 10 s
        (``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` overrides); steps continue those of an earlier attempt."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self.system_metrics = SystemMetricsMonitor(self.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                                   resume_logging=True, tracking_uri=self.uri)
        self.system_metrics.start()

    def stop_system_metrics(self) -> None:
        if self.system_metrics is not None:
            self.system_metrics.finish()
            self.system_metrics = None

    def finish(self, status: str = "FINISHED") -> None:
        self.stop_system_metrics()
        self.client.set_terminated(self.run_id, status=status)
