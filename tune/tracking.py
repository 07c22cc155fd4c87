"""MLflow for a search: one parent run per search, one nested child run per trial (created by the trial itself).

The parent is found again by its search name when a search resumes. After the search, the driver closes each
child (FINISHED, or KILLED when ASHA stopped it early), logs its final objective, and logs the search's summary
and the best configuration (YAML) to the parent.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from cdrl.config import Config
from pipeline.tracking import RunLogger, start_run
from tune.trial import PARENT_TAG, SEARCH_TAG, TRIAL_TAG

ROLE_TAG = "tune.role"


def start_parent_run(config: Config, name: str, settings: dict[str, Any]) -> tuple[str, str]:
    """(tracking_uri, run_id) of the search's parent run (reused when the search resumes).

    Its params are the base config (the trials' common settings); the search settings go in as ``search.*`` params.
    """
    uri, run_id = start_run(replace(config, run=replace(config.run, name=f"search-{name}")),
                            {SEARCH_TAG: name, ROLE_TAG: "search"})
    logger = RunLogger(uri, run_id)
    existing = logger.client.get_run(run_id).data.params
    from mlflow.entities import Param

    params = [Param(f"search.{k}", (v if isinstance(v, str) else json.dumps(v, default=str))[:500])
              for k, v in settings.items() if f"search.{k}" not in existing]
    if params:
        logger.client.log_batch(run_id, params=params)
    return uri, run_id


def child_runs(uri: str, parent_run_id: str) -> dict[str, Any]:
    """{trial_id: mlflow Run} of a parent run's children."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=10_000)
    return {run.data.tags[TRIAL_TAG]: run for run in runs if TRIAL_TAG in run.data.tags}


def close_children(uri: str, parent_run_id: str, trials: list[dict[str, Any]], curves: dict[str, list[dict]]) -> None:
    """Close every trial's child run once: its objective and metric against training seconds (MLflow step =
    whole training seconds, so trials line up in the UI), and its status (ASHA kills early-stopped trials
    mid-run: KILLED). Runs closed by an earlier invocation of a resumed search are left as they are."""
    children = child_runs(uri, parent_run_id)
    for trial in trials:
        run = children.get(trial["trial_id"])
        if run is None or trial["status"] in ("PENDING", "RUNNING", "PAUSED") or "tune.status" in run.data.tags:
            continue
        logger = RunLogger(uri, run.info.run_id)
        for point in curves.get(trial["trial_id"], []):
            values = {f"tune/{k}": v for k, v in point.items() if k != "train_seconds" and v is not None
                      and math.isfinite(v)}
            if values:
                logger.log_metrics(int(round(point["train_seconds"])), values)
        logger.set_tags({"tune.early_stopped": str(trial["early_stopped"]).lower(), "tune.status": trial["status"]})
        logger.finish("KILLED" if trial["early_stopped"] else "FAILED" if trial["status"] == "ERROR" else "FINISHED")


def log_search_summary(uri: str, parent_run_id: str, summary: dict[str, Any], best_yaml: str | None) -> None:
    """Search totals and the best trial on the parent run; the best config as ``best_config/best.yaml``."""
    logger = RunLogger(uri, parent_run_id)
    metrics = {"tune/trials": summary["num_trials"], "tune/early_stopped": summary["num_early_stopped"],
               "tune/errored": summary["num_errored"]}
    best = summary.get("best")
    if best:
        metrics["tune/best_objective"] = best["objective"]
        if best.get("metric") is not None:
            metrics[f"best/{summary['metric']}"] = best["metric"]
        logger.set_tags({"tune.best_trial_id": best["trial_id"], "tune.best_child_run_id": best.get("child_run_id", "")})
    versus = summary.get("versus_baseline")
    if versus:
        metrics["tune/baseline_objective"] = versus["baseline_objective"]
        logger.set_tags({"tune.baseline_trial_id": summary["baseline"]["trial_id"],
                         "tune.best_beats_baseline": str(versus["best_beats_baseline"]).lower()})
    logger.log_metrics(0, metrics)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "search_summary.json"
        path.write_text(json.dumps(summary, indent=2, default=str))
        logger.log_artifact(path, "search")
        if best_yaml is not None:
            path = Path(folder) / "best.yaml"
            path.write_text(best_yaml)
            logger.log_artifact(path, "best_config")


def finish_parent(uri: str, parent_run_id: str, interrupted: bool) -> None:
    RunLogger(uri, parent_run_id).finish("KILLED" if interrupted else "FINISHED")

