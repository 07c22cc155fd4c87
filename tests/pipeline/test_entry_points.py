"""The command lines of pipeline/train.py and pipeline/sample.py, run as a user runs them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_TOY

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}


def run(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "pipeline" / script), *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.subprocess
@pytest.mark.parametrize(("config", "counts"), [
    ("toy_official.yaml", (1_217_920, 58_432)),
    ("cifar10.yaml", (34_833_152, 3_769_795)),
    ("toy.yaml", None),
    ("digits.yaml", None),
])
def test_dry_run_prints_and_writes_param_counts(config, counts, tmp_path):
    summary_path = tmp_path / "s.json"
    proc = run("train.py", "--config", f"pipeline/configs/{config}", "--dry-run", "--summary", str(summary_path))
    summary = json.loads(summary_path.read_text())
    assert {"run_name", "checkpoint", "step", "param_counts", "metrics"} <= set(summary)
    if counts:
        assert (summary["param_counts"]["energy_net"], summary["param_counts"]["initializer"]) == counts
        assert f"{counts[0]:,}" in proc.stdout


@pytest.mark.subprocess
def test_train_then_sample_local(tmp_path):
    summary_path = tmp_path / "s.json"
    run("train.py", "--backend", "local", *TINY_TOY, "train.iterations=10", f"run.output_dir={tmp_path}",
        "run.name=cli", "--summary", str(summary_path))
    summary = json.loads(summary_path.read_text())
    assert summary["step"] == 10 and Path(summary["checkpoint"]).is_file()
    assert {"in_support", "balance", "mmd_bw1"} <= set(summary["metrics"])
    out = tmp_path / "samples.npy"
    proc = run("sample.py", "--checkpoint", summary["checkpoint"], "--num-samples", "30", "--out", str(out),
               "--steps-per-level", "2", "--seed", "1", "--grid", str(tmp_path / "g.png"))
    samples = np.load(out)
    assert samples.shape == (30, 2) and samples.dtype == np.float32 and np.isfinite(samples).all()
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote 30 samples" in proc.stdout

    # evaluate.py on the checkpoint repeats the training's final evaluation exactly (same protocol).
    report_path = tmp_path / "eval.json"
    proc = run("evaluate.py", "--model", summary["checkpoint"], "--json", str(report_path), "--workers", "0",
               "--out-dir", str(tmp_path / "evaluate"))
    report = json.loads(report_path.read_text())
    assert report["checkpoint"] == summary["checkpoint"] and report["step"] == 10
    assert report["primary_metric"] == {"name": "eval/in_support", "value": summary["metrics"]["in_support"],
                                        "higher_is_better": True}
    for key in ("in_support", "balance", "mmd_bw1", "sample_nan_fraction"):
        assert report["metrics"][f"eval/{key}"] == summary["metrics"][key], key
    assert report["dataset_version"] == summary["dataset_version"]
    assert report["protocol"]["num_samples"] == 200 and report["protocol"]["extractor"] is None
    assert "eval/in_support" in proc.stdout and Path(report["artifacts"]["scatter"]).is_file()


@pytest.mark.subprocess
def test_rerun_same_name_resumes(tmp_path):
    common = ["--backend", "local", *TINY_TOY, f"run.output_dir={tmp_path}", "run.name=resume"]
    run("train.py", *common, "train.iterations=5")
    proc = run("train.py", *common, "train.iterations=8", "--summary", str(tmp_path / "s.json"))
    assert "resuming resume" in proc.stdout and "(step 5)" in proc.stdout
    assert json.loads((tmp_path / "s.json").read_text())["step"] == 8


@pytest.mark.subprocess
@pytest.mark.parametrize(("args", "message"), [
    (["train.bogus=1"], "train.bogus"),
    (["--config", "nope.yaml"], "nope.yaml"),
    (["train.batch_size=-3"], "train.batch_size"),
])
def test_bad_input_is_one_line_and_nonzero(args, message):
    proc = run("train.py", "--dry-run", *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.subprocess
def test_evaluate_bad_model_ref(tmp_path):  # the other kinds of bad refs: tests/pipeline/test_evaluation.py
    proc = run("evaluate.py", "--model", str(tmp_path / "none.pt"), "--workers", "0", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "none.pt" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.subprocess
def test_image_run_without_inception_weights_stops_with_one_line(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "CDRL_INCEPTION_WEIGHTS"}
    proc = subprocess.run([sys.executable, str(REPO / "pipeline" / "train.py"), "--backend", "local", "--config",
                           "pipeline/configs/digits.yaml", "data.name=patches", "data.num_points=16",
                           "eval.extractor=inception", f"run.output_dir={tmp_path}"],
                          cwd=REPO, env={**env, "TORCH_HOME": str(tmp_path / "torch")}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "pt_inception-2015-12-05-6726825d.pth" in proc.stderr and "hub/checkpoints" in proc.stderr
    assert not (tmp_path / "digits" / "checkpoints").exists()


@pytest.mark.subprocess
def test_sample_from_missing_checkpoint(tmp_path):
    proc = run("sample.py", "--checkpoint", str(tmp_path / "none.pt"), "--num-samples", "2", "--out",
               str(tmp_path / "x.npy"), check=False)
    assert proc.returncode == 2 and "none.pt" in proc.stderr


@pytest.mark.parametrize(("dataset", "shape"), [("digits", (1, 8, 8)), ("patches", (3, 32, 32))])
def test_image_nets_train_a_few_iterations(dataset, shape, tmp_path):
    from cdrl.config import load_config
    from pipeline.local_backend import train_locally
    from pipeline.run_data import dataset_for_run

    config = load_config(REPO / "pipeline/configs/digits.yaml", [
        f"data.name={dataset}", "data.num_points=64", "train.iterations=3", "train.batch_size=8", "train.log_every=1",
        "model.energy_net.base_channels=8", "model.energy_net.blocks_per_resolution=1", "model.energy_net.temb_hidden=32",
        "model.initializer.base_channels=16", "model.initializer.attention_resolutions=[16, 4]", "langevin.num_steps=2",
        "eval.num_samples=4", "generation.batch_size=4", "eval.extractor=none", f"run.output_dir={tmp_path}",
        f"run.name={dataset}",
    ])
    summary = train_locally(config, *dataset_for_run(config))
    assert summary.step == 3 and summary.metrics["sample_nan_fraction"] == 0.0
    assert np.load(summary.artifacts["samples"]).shape == (4, *shape)
    assert Path(summary.artifacts["grid"]).is_file()


@pytest.mark.subprocess
def test_overrides_before_and_after_options(tmp_path):
    summary_path = tmp_path / "s.json"
    run("train.py", "train.iterations=3", "--config", "pipeline/configs/digits.yaml", "run.name=mixed", "--dry-run",
        "--summary", str(summary_path))
    config = json.loads(summary_path.read_text())["config"]
    assert (config["train"]["iterations"], config["run"]["name"], config["data"]["name"]) == (3, "mixed", "digits")
