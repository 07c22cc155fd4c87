"""The Kubeflow pipeline compiles (kfp v2, in its own venv: `make kfp-env`) and its steps are this repository's
entry points, in the order prepare → train → evaluate → register/promote."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
KFP_PYTHON = REPO / ".venv-kfp" / "bin" / "python"
STEPS = {"prepare-data": "pipeline/prepare_data.py", "train": "pipeline/train.py", "evaluate": "pipeline/evaluate.py",
         "promote": "pipeline/promote.py"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> list[dict]:
    subprocess.run(["make", "-s", "kfp-env"], cwd=REPO, check=True, timeout=600)  # no-op once the venv exists
    out = tmp_path_factory.mktemp("kfp") / "cdrl_pipeline.yaml"
    proc = subprocess.run([str(KFP_PYTHON), "infra/kubeflow/cdrl_pipeline.py", "--out", str(out), "--gpus", "8"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return list(yaml.safe_load_all(out.read_text()))


def test_steps_run_the_entry_points_in_order(compiled):
    spec = compiled[0]
    executors = spec["deploymentSpec"]["executors"]
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(STEPS)
    for name, script in STEPS.items():
        container = executors[tasks[name]["componentRef"]["name"].replace("comp-", "exec-")]["container"]
        assert container["command"] == ["python", script] and (REPO / script).is_file()
        assert container["image"].startswith("ghcr.io/OWNER/cdrl-pipeline:")
        assert tasks[name]["cachingOptions"] == {}  # caching off: a retrain always runs
    order = ["prepare-data", "train", "evaluate", "promote"]
    for before, after in zip(order, order[1:]):
        assert before in tasks[after].get("dependentTasks", []), (before, after)
    train_args = executors["exec-train"]["container"]["args"]
    assert "--warm-start" in train_args and "registry.enabled=false" in train_args
    assert "--exit-zero" in executors["exec-promote"]["container"]["args"]
    assert executors["exec-train"]["container"]["resources"]["accelerator"]["resourceCount"] == "8"
    config = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert (REPO / config).is_file()


def test_steps_read_the_same_secret_and_configmap_as_kuberay(compiled):
    platform = compiled[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in platform.values():
        assert executor["secretAsEnv"][0]["secretName"] == "cdrl-s3"
        assert executor["configMapAsEnv"][0]["configMapName"] == "cdrl-settings"
    assert set(platform) == {f"exec-{name}" for name in STEPS}


def test_recurring_run_script_loads_the_kfp_client():
    proc = subprocess.run([str(KFP_PYTHON), "infra/kubeflow/recurring_run.py", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "0 0 3 * * 1" in proc.stdout, proc.stderr
