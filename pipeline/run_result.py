"""What a finished training run hands back, the same for both backends: ``RunResult``.

Ray Train brings a worker's values to the driver as the metrics dict of its last checkpointed
``ray.train.report`` and as its return value (``Result.return_value``, used for the divergence report).
The names used in that dict for values that are not training metrics (the step, the training time, the
divergence reason, artifact paths, unsent MLflow metrics) live here, and so does the one conversion from that
dict to a ``RunResult`` (``RunResult.from_reported``); the worker builds its final reports with
``final_report`` and ``divergence_report``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

STEP = "step"
TRAIN_SECONDS = "train_seconds"
DIVERGED = "health/diverged"
UNSENT_METRICS = "tracking/unsent_metrics"
ARTIFACT_PREFIX = "artifact/"
SUMMARY_METRIC_PREFIXES = ("eval/", "fid/")  # the evaluation metrics among a report's training metrics


@dataclass
class RunResult:
    """A finished run: where its final checkpoint is, how far it got, and how good it is.

    ``metrics`` are the final evaluation's summary metrics (``pipeline.evaluation.summary_metrics``),
    ``artifacts`` the final evaluation's files (name → path). ``tracking`` is (tracking URI, MLflow run id)
    when the run was tracked; ``registered_model`` the version it registered ({name, version, uri}).
    ``diverged`` is the health guard's reason when training stopped for divergence (the backends raise
    ``TrainingDiverged`` for it, so a returned result never has one).
    """

    run_name: str
    backend: str
    checkpoint: str | None
    step: int
    train_seconds: float
    dataset_version: str
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    num_workers: int = 1
    tracking: tuple[str, str] | None = None
    registered_model: dict[str, str] | None = None
    mlflow_unsent_metrics: int = 0
    diverged: str | None = None

    @classmethod
    def from_reported(cls, reported: dict[str, Any], **fields: Any) -> RunResult:
        """The result a Ray Train run's last reported metrics describe; ``fields`` are what the driver knows
        itself (run name, backend, checkpoint, dataset version, …)."""
        from pipeline.evaluation import summary_metrics

        return cls(
            step=int(reported.get(STEP, 0)),
            train_seconds=float(reported.get(TRAIN_SECONDS, 0.0)),
            artifacts={k.removeprefix(ARTIFACT_PREFIX): v for k, v in reported.items() if k.startswith(ARTIFACT_PREFIX)},
            metrics=summary_metrics({k: v for k, v in reported.items() if k.startswith(SUMMARY_METRIC_PREFIXES)}),
            mlflow_unsent_metrics=int(reported.get(UNSENT_METRICS, 0)),
            diverged=reported.get(DIVERGED) or None,
            **fields,
        )

    @property
    def mlflow_run_id(self) -> str | None:
        return self.tracking[1] if self.tracking else None

    def to_summary(self) -> dict[str, Any]:
        """The JSON summary ``train.py --summary`` writes (``diverged`` left out: such a run has none)."""
        summary = dataclasses.asdict(self)
        del summary["diverged"], summary["tracking"]
        summary["mlflow"] = {"tracking_uri": self.tracking[0], "run_id": self.tracking[1]} if self.tracking else None
        return summary


def final_report(step: int, metrics: dict[str, float], train_seconds: float, final_eval: dict[str, float],
                 artifacts: dict[str, Any], unsent_metrics: int | None) -> dict[str, Any]:
    """A worker's last report of a finished run: training and final evaluation metrics, the values
    ``RunResult.from_reported`` reads back, artifact paths as ``artifact/NAME``."""
    report = {STEP: step, **metrics, TRAIN_SECONDS: train_seconds, **final_eval,
              **{f"{ARTIFACT_PREFIX}{k}": str(v) for k, v in artifacts.items()}}
    if unsent_metrics is not None:
        report[UNSENT_METRICS] = unsent_metrics
    return report


def divergence_report(step: int, reason: str, unsent_metrics: int | None) -> dict[str, Any]:
    """What a worker returns when the health guard stopped the run (the driver reads Result.return_value:
    Result.metrics holds only the latest checkpoint report's metrics)."""
    report: dict[str, Any] = {STEP: step, DIVERGED: reason}
    if unsent_metrics is not None:
        report[UNSENT_METRICS] = unsent_metrics
    return report
