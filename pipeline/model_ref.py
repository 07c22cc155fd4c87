"""Turn what a user names a model by into one checkpoint file: for evaluate.py, sample.py and retrain.py.

A REF is one of
- a checkpoint file, local or ``s3://…/checkpoint.pt`` (or ``step_XXXXXXXX.pt``);
- a folder: a Ray Train checkpoint folder (holding ``checkpoint.pt``), a Ray run folder (its latest
  ``checkpoint_*``), or a local-backend checkpoint folder (its latest ``step_*.pt``); local or s3://;
- a run name: the ``checkpoint_uri`` tag of that run's newest MLflow run, else ``runs/NAME/checkpoints``
  (local backend) or ``runs/ray/NAME`` (Ray, default storage);
- ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``: a registered model (``pipeline.registry``).
"""
from __future__ import annotations

import os
from pathlib import Path

from pipeline import storage
from pipeline.checkpoints import checkpoint_in_folder

DEFAULT_OUTPUT_DIR = "runs"


class ModelRefError(ValueError):
    """A model reference that names no checkpoint; the message says what was tried."""


def _from_mlflow(run_name: str, tracking_uri: str | None) -> str | None:
    """The ``checkpoint_uri`` tag of the newest MLflow run called ``run_name`` (any experiment)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    default_db = Path(DEFAULT_OUTPUT_DIR).absolute() / "mlflow.db"
    if uri is None and default_db.is_file():
        uri = f"sqlite:///{default_db}"
    if uri is None:
        return None
    from mlflow import MlflowClient

    from pipeline.tracking import RUN_NAME_TAG, check_reachable

    check_reachable(uri)
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
                              order_by=["attributes.start_time DESC"], max_results=5) if experiments else []
    for run in runs:
        if run.data.tags.get("checkpoint_uri"):
            return run.data.tags["checkpoint_uri"]
    return None


def resolve_checkpoint(ref: str, tracking_uri: str | None = None) -> str:
    """The checkpoint file (local path or s3:// URI) that ``ref`` names; ModelRefError if none."""
    if not ref:
        raise ModelRefError("empty model reference")
    if ref.startswith("models:/"):
        try:
            from pipeline.registry import checkpoint_for_model_uri
        except ImportError as err:
            raise ModelRefError(f"{ref}: registered models need pipeline/registry.py, which this checkout lacks") from err
        return checkpoint_for_model_uri(ref, tracking_uri)
    if storage.is_s3(ref) or Path(ref).exists():
        if ref.endswith(".pt"):
            if not storage.exists(ref):
                raise ModelRefError(f"{ref}: no such checkpoint file")
            return ref
        found = checkpoint_in_folder(ref.rstrip("/"))
        if found is None:
            raise ModelRefError(f"{ref}: no checkpoint in this folder (checkpoint.pt, checkpoint_*/ or step_*.pt)")
        return found
    if "/" in ref or ref.endswith(".pt"):
        raise ModelRefError(f"{ref}: no such checkpoint file or folder")
    tried = []
    from_tracking = _from_mlflow(ref, tracking_uri)
    if from_tracking:
        return from_tracking
    tried.append("MLflow runs (tag checkpoint_uri)" if (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")) else
                 "MLflow (no tracking URI)")
    for folder in (Path(DEFAULT_OUTPUT_DIR) / ref / "checkpoints", Path(DEFAULT_OUTPUT_DIR) / "ray" / ref):
        tried.append(str(folder))
        if folder.is_dir() and (found := checkpoint_in_folder(str(folder.absolute()))):
            return found
    raise ModelRefError(f"{ref}: not a checkpoint path or URI, nor a run with a checkpoint (tried {', '.join(tried)})")
