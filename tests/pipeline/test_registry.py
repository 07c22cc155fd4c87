"""Model registry round trip on a real MLflow (sqlite): register a trained checkpoint, load it back as a
pyfunc model that samples, resolve models:/NAME@ALIAS and models:/NAME/VERSION to the checkpoint file."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdrl.config import load_config
from pipeline.local_backend import train_locally
from pipeline.registry import (CHAMPION, CONFIG_TAG, RegistryError, checkpoint_for_model_uri, config_digest, model_name,
                               parse_model_uri, register_checkpoint, version_artifacts_uri)
from pipeline.run_data import dataset_for_run
from pipeline.tracking import start_run
from tests.conftest import TINY_TOY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """One tiny toy trained locally (20 steps), registered as version 1 with alias champion."""
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    config = load_config(None, TINY_TOY + [f"run.output_dir={tmp}", "run.name=reg", "train.iterations=20",
                                           f"tracking.uri={uri}"])
    data_uri, manifest = dataset_for_run(config)
    summary = train_locally(config, data_uri, manifest)
    _, run_id = start_run(config, {"dataset_version": manifest.version})
    name, version = register_checkpoint(summary.checkpoint, config, uri, run_id,
                                        tags={"dataset_version": manifest.version}, aliases=(CHAMPION,))
    return {"uri": uri, "name": name, "version": version, "config": config, "summary": summary, "run_id": run_id}


def test_registered_version_has_the_layout_and_tags(registered):
    from mlflow import MlflowClient

    client = MlflowClient(registered["uri"])
    assert registered["name"] == model_name(registered["config"]) == "cdrl-8squares"
    version = client.get_model_version_by_alias(registered["name"], CHAMPION)
    assert str(version.version) == registered["version"] == "1" and version.run_id == registered["run_id"]
    assert version.tags[CONFIG_TAG] == config_digest(registered["config"])
    assert version.tags["checkpoint_uri"] == registered["summary"].checkpoint
    from mlflow.artifacts import list_artifacts

    folder = version_artifacts_uri(version, registered["uri"])
    files = {Path(f.path).name for f in list_artifacts(artifact_uri=folder, tracking_uri=registered["uri"])}
    assert files == {"checkpoint.pt", "config.yaml"}
    model_files = {Path(f.path).name for f in list_artifacts(artifact_uri=folder.rsplit("/", 1)[0],
                                                             tracking_uri=registered["uri"])}
    assert {"MLmodel", "python_model.pkl", "requirements.txt"} <= model_files
    again = register_checkpoint(registered["summary"].checkpoint, registered["config"], registered["uri"],
                                registered["run_id"])
    assert again == (registered["name"], "1")  # the same run's same checkpoint: no second version


def test_pyfunc_predict_returns_samples_of_the_data_shape(registered):
    import mlflow

    mlflow.set_tracking_uri(registered["uri"])
    model = mlflow.pyfunc.load_model(f"models:/{registered['name']}@{CHAMPION}")
    inputs = model.metadata.get_input_schema().input_names()
    assert inputs == ["num_samples", "label", "guidance_weight", "steps_per_level", "seed"]
    assert model.metadata.get_output_schema().inputs[0].shape == (-1, 2)
    samples = model.predict(pd.DataFrame({"num_samples": [7], "steps_per_level": [1], "seed": [3]}))
    assert samples.shape == (7, 2) and samples.dtype == np.float32 and np.isfinite(samples).all()
    again = model.predict(pd.DataFrame({"num_samples": [7], "steps_per_level": [1], "seed": [3]}))
    np.testing.assert_array_equal(samples, again)  # the seed fixes the draw
    two_rows = model.predict(pd.DataFrame({"num_samples": [2, 3]}))
    assert two_rows.shape == (5, 2)


def test_model_uris_resolve_to_the_registered_checkpoint(registered):
    original = hashlib.sha256(Path(registered["summary"].checkpoint).read_bytes()).hexdigest()
    for ref in (f"models:/{registered['name']}@{CHAMPION}", f"models:/{registered['name']}/1"):
        path = checkpoint_for_model_uri(ref, registered["uri"])
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == original, ref
    with pytest.raises(RegistryError, match="models:/cdrl-8squares@nobody"):
        checkpoint_for_model_uri("models:/cdrl-8squares@nobody", registered["uri"])
    with pytest.raises(RegistryError, match="not a registered-model URI"):
        parse_model_uri("models:/no spaces")
