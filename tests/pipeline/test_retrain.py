"""pipeline/retrain.py against a real MLflow (sqlite) with the local backend: the first retrain promotes (no
champion), a rerun without new data does nothing, new data and a well-trained challenger promote, a deliberately
worse challenger (untrained, from scratch) is kept out; evaluate.py and sample.py read models:/…@champion."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.promotion import EXIT_KEPT, EXIT_PROMOTED, EXIT_UP_TO_DATE
from pipeline.retrain import main as retrain
from tests.conftest import TINY_TOY

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
pytestmark = pytest.mark.slow


def prepare(folder: Path, seed: int) -> None:
    proc = subprocess.run([sys.executable, "pipeline/prepare_data.py", "--dataset", "8squares", "--num-points", "2000",
                           "--seed", str(seed), "--out", str(folder)], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_promote_up_to_date_promote_keep(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data_root = tmp_path / "data"  # a folder of dataset versions: retrain picks the newest
    common = ["--config", "pipeline/configs/toy.yaml", "--backend", "local", *TINY_TOY, f"run.output_dir={tmp_path}",
              "run.name=nightly", f"tracking.uri={uri}", f"data.uri={data_root}", "eval.num_samples=400"]
    client = MlflowClient(uri)

    def outcome(*extra: str) -> tuple[int, dict]:
        out = tmp_path / f"outcome-{len(list(tmp_path.glob('outcome-*')))}.json"
        code = retrain([*common, *extra, "--json", str(out)])
        return code, json.loads(out.read_text())

    def champion():
        return client.get_model_version_by_alias("cdrl-8squares", "champion")

    prepare(data_root / "v1", seed=1)
    # 1. No champion yet: an untrained model (0 steps) is promoted, trained on v1.
    code, first = outcome("train.iterations=0")
    assert code == EXIT_PROMOTED and first["decision"] == "promoted" and first["reason"] == "no champion yet"
    assert first["data_uri"] == str(data_root / "v1")
    assert champion().tags["dataset_version"] == first["dataset_version"]

    # 2. Same data, same config: nothing to do, nothing registered.
    code, same = outcome("train.iterations=0")
    assert code == EXIT_UP_TO_DATE and same["decision"] == "up_to_date"
    assert len(client.search_model_versions("name='cdrl-8squares'")) == 1

    # 3. A new dataset version; 300 warm-started steps beat the untrained champion.
    prepare(data_root / "v2", seed=2)
    code, better = outcome("train.iterations=0", "retrain.iterations=300")
    assert code == EXIT_PROMOTED, better
    assert better["data_uri"] == str(data_root / "v2") and better["dataset_version"] != first["dataset_version"]
    assert better["warm_start"].startswith("champion models:/cdrl-8squares/1")
    assert better["challenger_score"] > better["champion_score"]
    assert str(champion().version) == "2" and champion().tags["dataset_version"] == better["dataset_version"]
    run = client.get_run(better["run_id"])
    assert run.data.tags["retrain.decision"] == "promoted"
    assert run.data.tags["retrain.dataset_version"] == better["dataset_version"]
    assert run.data.tags["retrain.champion_dataset_version"] == first["dataset_version"]
    assert run.data.metrics["retrain/challenger_score"] == pytest.approx(better["challenger_score"])
    assert run.data.metrics["retrain/champion_score"] == pytest.approx(better["champion_score"])
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "retrain")} == {
        "challenger.json", "champion.json", "decision.json"}

    # 4. Forced, from scratch with 0 steps: worse than the champion, so the champion stays.
    code, worse = outcome("train.iterations=0", "retrain.warm_start=false", "--force")
    assert code == EXIT_KEPT and worse["decision"] == "kept" and worse["warm_start"].startswith("scratch")
    assert worse["challenger_score"] < worse["champion_score"]
    assert str(champion().version) == "2"
    assert str(client.get_model_version_by_alias("cdrl-8squares", "challenger").version) == "3"
    # The kept challenger counts as up to date too: the schedule does not retrain it every night.
    code, _ = outcome("train.iterations=0", "retrain.warm_start=false")
    assert code == EXIT_UP_TO_DATE

    # evaluate.py on the champion reproduces the score the retrain compared against (same fixed protocol).
    report_path = tmp_path / "champion.json"
    proc = subprocess.run([sys.executable, "pipeline/evaluate.py", "--model", "models:/cdrl-8squares@champion",
                           "--tracking-uri", uri, "--num-samples", "400", "--seed", "0", "--workers", "0",
                           "--json", str(report_path), "--out-dir", str(tmp_path / "eval")],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    assert report["primary_metric"]["name"] == "eval/in_support"
    assert report["primary_metric"]["value"] == pytest.approx(worse["champion_score"], abs=1e-9)
    assert report["dataset_version"] == better["dataset_version"]

    out = tmp_path / "s.npy"
    proc = subprocess.run([sys.executable, "pipeline/sample.py", "--model", "models:/cdrl-8squares/2", "--num-samples",
                           "9", "--out", str(out), "--steps-per-level", "1"],
                          cwd=REPO, env={**ENV, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert np.load(out).shape == (9, 2)


def test_exit_codes_and_bad_input(tmp_path):
    proc = subprocess.run([sys.executable, "pipeline/retrain.py", "--help"], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    for line in ("0   up to date", "10  promoted", "11  kept", "1   failed", "2   bad input"):
        assert line in proc.stdout
    proc = subprocess.run([sys.executable, "pipeline/retrain.py", "--config", "pipeline/configs/toy.yaml",
                           f"tracking.uri=sqlite:///{tmp_path / 'm.db'}", f"data.uri={tmp_path / 'nothing'}"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert str(tmp_path / "nothing") in proc.stderr
