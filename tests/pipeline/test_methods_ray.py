"""Training methods on a real local Ray (2 DDP workers) in one driver process: the persistent-chain MCMC EBM
(per-worker replay buffers in the checkpoint) and sliced score matching (a loss on ∇ₓF: double backward
through DDP). Two-net DDP (the learned sampler's case) is CDRL's, tested in test_ray_training.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cdrl.checkpoint import load_checkpoint
from tests.conftest import TINY_TOY

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

DRIVER = """
import json, sys
from pipeline.train import main
out, common = sys.argv[1], sys.argv[2:]
for method in ("mcmc", "sliced_sm"):
    main(["--config", f"pipeline/configs/{method}.yaml", *common, f"run.name={method}",
          "--summary", f"{out}/{method}.json"])
"""


def test_mcmc_and_sliced_score_matching_on_two_ray_workers(tmp_path):
    overrides = [*TINY_TOY, "ray.num_workers=2", "ray.cpus_per_worker=0.5", "train.iterations=4", "train.log_every=2",
                 "train.checkpoint_every=2", "tracking.enabled=false", "mcmc.num_steps=2", "mcmc.buffer_size=40",
                 "mcmc.sample_steps=2", "score_matching.sample_steps=2", "learned_sampler.hidden=16",
                 f"run.output_dir={tmp_path}", "eval.num_samples=16", "generation.batch_size=16"]
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path), *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    for method in ("mcmc", "sliced_sm"):
        summary = json.loads((tmp_path / f"{method}.json").read_text())
        assert summary["step"] == 4 and summary["num_workers"] == 2, method
        assert summary["metrics"]["sample_nan_fraction"] == 0.0 and 0 <= summary["metrics"]["in_support"] <= 1
    state = load_checkpoint(json.loads((tmp_path / "mcmc.json").read_text())["checkpoint"])["trainer"]
    buffers = state["objective"]["replay_buffer"]["chains"]
    assert len(buffers) == 2 and buffers[0].shape == (40, 2)
    assert not torch.equal(buffers[0], buffers[1])  # one buffer per worker, each fed by its own chains
    assert set(state["nets"]) == {"energy_net"}
