"""MLflow model registry: a trained CDRL model as an ``mlflow.pyfunc`` model that samples.

Layout of one registered version (logged model ``model`` of its training run)::

    model/MLmodel                  flavor python_function, signature (inputs below, output float32 tensor)
    model/python_model.pkl         CdrlSampler (code comes from the installed project)
    model/artifacts/checkpoint.pt  the cdrl-checkpoint/1 file (nets, EMAs, optimizers, config)
    model/artifacts/config.yaml    the run's resolved config

Version tags: ``dataset_version`` (manifest content id), ``config_digest`` (training-relevant config),
``step``, ``run_name``, ``checkpoint_uri``. Aliases: ``champion`` (serving), ``challenger`` (latest retrain).

Predict input: a DataFrame, one row per request, columns ``num_samples`` (required), ``label`` (0-based class),
``guidance_weight`` (§8), ``steps_per_level`` (§7, fewer = faster sampler), ``seed``. Output: float32 samples
``(N, *data_shape)`` (rows' samples concatenated), in model space (images in [-1, 1]).
"""
from __future__ import annotations

import hashlib
import json
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cdrl.config import Config
from pipeline.model_ref import ModelRefError

MODEL_ARTIFACT = "model"  # the logged model's name inside its run
CHAMPION, CHALLENGER = "champion", "challenger"
DATASET_TAG, CONFIG_TAG = "dataset_version", "config_digest"
MODEL_URI = re.compile(r"models:/(?P<name>[\w.-]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))")
INPUT_COLUMNS = {"num_samples": "long", "label": "long", "guidance_weight": "double", "steps_per_level": "long",
                 "seed": "long"}
DIGEST_SECTIONS = ("schedule", "model", "langevin", "train", "generation")  # what changes the trained model


class RegistryError(ModelRefError):
    """A registered model or alias that does not exist, or a malformed models:/ URI; the message names it
    (a ModelRefError, so every entry point that takes a model reference reports it as bad input)."""


def model_name(config: Config) -> str:
    """``registry.model_name``, else ``cdrl-<data.name>`` (e.g. cdrl-8squares, cdrl-digits)."""
    return config.registry.model_name or f"cdrl-{config.data.name}"


def config_digest(config: Config) -> str:
    """sha256 (16 hex) of the config sections that change what is trained: equal digests, same recipe."""
    values = config.to_dict()
    described = {section: values[section] for section in DIGEST_SECTIONS}
    described["data"] = {"name": config.data.name, "num_points": config.data.num_points}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ pyfunc
def _pyfunc_base():
    from mlflow.pyfunc import PythonModel

    return PythonModel


class CdrlSampler(_pyfunc_base()):
    """Draws samples from the checkpoint's EMA nets (the pyfunc model of every registered version)."""

    def load_context(self, context) -> None:
        import torch

        from cdrl.factory import nets_from_checkpoint
        from pipeline.checkpoints import read_checkpoint

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.config, self.nets, self.data_shape = nets_from_checkpoint(
            read_checkpoint(context.artifacts["checkpoint"]), self.device)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        from pipeline.sample import draw_samples

        rows = model_input.to_dict(orient="records")
        outputs = []
        for row in rows:
            value = {key: (None if _missing(row.get(key)) else row[key]) for key in INPUT_COLUMNS}
            samples = draw_samples(
                self.config, self.nets, self.data_shape, int(value["num_samples"]),
                label=None if value["label"] is None else int(value["label"]),
                guidance_weight=None if value["guidance_weight"] is None else float(value["guidance_weight"]),
                steps_per_level=None if value["steps_per_level"] is None else int(value["steps_per_level"]),
                seed=int(value["seed"] or 0), device=self.device)
            outputs.append(samples.numpy().astype(np.float32))
        return np.concatenate(outputs)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def signature(data_shape: tuple[int, ...]):
    """Inputs: the sampling request columns (only ``num_samples`` required); output: (N, *data_shape) float32."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    inputs = Schema([ColSpec(kind, name, required=name == "num_samples") for name, kind in INPUT_COLUMNS.items()])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *data_shape))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements() -> list[str]:
    """The installed versions of what the sampler imports (given explicitly: MLflow's inference takes seconds)."""
    return [f"{package}=={metadata.version(package)}" for package in ("torch", "numpy", "pyyaml", "mlflow")]


# ------------------------------------------------------------------------------------------ registering
def register_checkpoint(checkpoint: str, config: Config, tracking_uri: str, run_id: str,
                        tags: dict[str, str] | None = None, aliases: tuple[str, ...] = ()) -> tuple[str, str]:
    """Log ``checkpoint`` (path or s3:// URI) as the pyfunc model of run ``run_id`` and register it under
    ``model_name(config)``; returns (name, version). Runs in the driver (never in Ray workers). A checkpoint
    this run already registered (a finished run started again) keeps its version."""
    import mlflow
    import yaml
    from mlflow import MlflowClient

    from pipeline import storage
    from pipeline.checkpoints import checkpoint_file_uri

    name = model_name(config)
    client = MlflowClient(tracking_uri)
    for existing in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        if existing.tags.get("checkpoint_uri") == checkpoint:  # a finished run re-run: same model, no new version
            for alias in aliases:
                client.set_registered_model_alias(name, alias, existing.version)
            return name, str(existing.version)
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as folder:
        local_checkpoint = Path(folder) / "checkpoint.pt"
        local_checkpoint.write_bytes(storage.read_bytes(checkpoint_file_uri(checkpoint)))
        config_file = Path(folder) / "config.yaml"
        config_file.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        from cdrl.checkpoint import load_checkpoint

        data_shape = tuple(load_checkpoint(local_checkpoint)["data_shape"])
        # start_run(run_id=…) only attaches to the existing run; its status is reset by the caller (RunLogger.finish).
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT, python_model=CdrlSampler(),
                artifacts={"checkpoint": str(local_checkpoint), "config": str(config_file)},
                signature=signature(data_shape), pip_requirements=pip_requirements())
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description=f"CDRL energy-based model trained on {config.data.name}; "
                                                         "predict() draws samples (see pipeline/registry.py)")
    version_tags = {CONFIG_TAG: config_digest(config), "run_name": config.run.name, "checkpoint_uri": checkpoint,
                    **(tags or {})}
    version = client.create_model_version(name, info.model_uri, run_id=run_id, model_id=info.model_id,
                                          tags={k: str(v) for k, v in version_tags.items()}).version
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version)
    return name, str(version)


# ----------------------------------------------------------------------------------------- resolving
def parse_model_uri(ref: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` → (NAME, ALIAS, None); ``models:/NAME/VERSION`` → (NAME, None, VERSION)."""
    match = MODEL_URI.fullmatch(ref)
    if not match:
        raise RegistryError(f"{ref}: not a registered-model URI (expected models:/NAME@ALIAS or models:/NAME/VERSION)")
    return match["name"], match["alias"], match["version"]


def model_version(ref: str, tracking_uri: str | None = None):
    """The MLflow ModelVersion that ``ref`` names; RegistryError when the model, alias or version is missing."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(ref)
    client = MlflowClient(tracking_uri)
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as err:
        import mlflow

        raise RegistryError(f"{ref}: no such registered model version in the registry at "
                            f"{tracking_uri or mlflow.get_tracking_uri()} ({err.error_code})") from None


def alias_version(name: str, alias: str, tracking_uri: str | None = None):
    """The version holding ``alias`` of model ``name``, or None (also when the model does not exist yet)."""
    try:
        return model_version(f"models:/{name}@{alias}", tracking_uri)
    except RegistryError:
        return None


def version_artifacts_uri(version, tracking_uri: str | None = None) -> str:
    """Artifact URI of the version's ``model/artifacts`` folder (checkpoint.pt, config.yaml)."""
    from mlflow import MlflowClient

    logged_model = MlflowClient(tracking_uri).get_logged_model(version.source.removeprefix("models:/"))
    return f"{logged_model.artifact_location.rstrip('/')}/artifacts"


def checkpoint_for_model_uri(ref: str, tracking_uri: str | None = None) -> str:
    """Local path of the checkpoint file of the registered version ``ref`` (downloaded once per version)."""
    from mlflow.artifacts import download_artifacts

    version = model_version(ref, tracking_uri)
    logged_model = re.sub(r"[^\w.-]", "_", version.source.removeprefix("models:/"))  # unique per logged model
    cache = Path(tempfile.gettempdir()) / "cdrl-registry" / f"{version.name}-v{version.version}-{logged_model}"
    target = cache / "checkpoint.pt"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as folder:
            path = download_artifacts(artifact_uri=f"{version_artifacts_uri(version, tracking_uri)}/checkpoint.pt",
                                      dst_path=folder, tracking_uri=tracking_uri)
            Path(path).replace(target)
    return str(target)
