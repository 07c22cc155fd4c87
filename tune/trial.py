"""One Tune trial = one ``pipeline/train.py`` Ray Train run (the Ray Train V2 + Tune pattern).

The trial function is the trial's driver: it builds the trial's config (base config + trial-only overrides +
sampled parameters), names the Train run after the trial id (so a restored trial resumes its own Train run from
its last checkpoint), and fits the TorchTrainer through ``pipeline.ray_backend.train_on_ray`` with a
``TrialReporter``, which forwards the workers' evaluation reports (every ``eval_every_s`` training seconds,
and the final one) to Tune with the objective added. Its MLflow run is a child of the search's parent run.
"""
from __future__ import annotations

import os
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from cdrl.config import Config, config_from_dict
from tune.space import OBJECTIVE, SearchSpace, with_values

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests the child under its parent
SEARCH_TAG = "tune.search"
TRIAL_TAG = "tune.trial_id"


class TrialReporter(TuneReportCallback):
    """Forward only the reports that carry the searched metric (evaluations), with ``tune/objective`` added."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        result = metrics[0]
        if self.space.metric not in result:
            return
        super().after_report(run_context, [{**result, OBJECTIVE: self.space.objective(result)}], checkpoint)


def trial_config(base: dict[str, Any], space: SearchSpace, params: dict[str, Any], trial_id: str,
                 train_storage: str) -> Config:
    """Base config ← trial-only overrides ← sampled params ← the trial's name, storage, budget and report times."""
    return config_from_dict(with_values(base, {
        **space.trial, **params,
        "run.name": trial_id, "run.storage_path": train_storage,
        "train.time_budget_s": space.budget_s, "tune.eval_every_s": space.eval_every_s,
        "registry.enabled": False,  # trials are candidates, not models: the best config is trained and registered
        "health.enabled": False,  # a diverging trial is for the scheduler to stop, not for the guard to roll back
    }))


def run_trial(params: dict[str, Any], base: dict[str, Any], space: SearchSpace, search: dict[str, str]) -> None:
    """Tune's function trainable: train one configuration with the pipeline's Ray Train backend."""
    from ray import tune

    from pipeline.ray_backend import train_on_ray
    from pipeline.run_data import dataset_for_run

    os.environ.pop("MLFLOW_RUN_ID", None)  # a set MLFLOW_RUN_ID would make MLflow ignore the parent run
    trial_id = tune.get_context().get_trial_id()
    config = trial_config(base, space, params, trial_id, search["train_storage"])
    data_uri, manifest = dataset_for_run(config)  # data.uri is set by the search: validated, never rewritten
    tags = {PARENT_TAG: search["parent_run_id"], SEARCH_TAG: search["name"], TRIAL_TAG: trial_id}
    train_on_ray(config, data_uri, manifest, run_callbacks=[TrialReporter(space)], tracking_tags=tags,
                 stoppable_at_evaluations=True)  # ASHA kills a trial at an evaluation report
