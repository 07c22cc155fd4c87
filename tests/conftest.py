"""Shared fixtures: small configurations, and the real local S3 / MLflow stack."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from cdrl.config import load_config
from tests.stack_fixtures import local_s3, local_stack  # noqa: F401  (session fixtures: real S3 / MLflow)

TINY_TOY = [
    "model.energy_net.base_channels=16", "model.energy_net.temb_hidden=32", "model.energy_net.temb_dim=16",
    "model.initializer.base_channels=32", "model.initializer.num_res_blocks=1", "model.initializer.temb_dim=16",
    "langevin.num_steps=3", "langevin.step_rule=toy", "langevin.c0=1e-3", "train.batch_size=64",
    "train.energy_lr=1e-3", "train.initializer_lr=1e-3", "train.energy_warmup=10", "train.initializer_warmup=10",
    "train.initializer_warmup_offset=0", "train.ema_decay=0.99", "train.log_every=5", "data.num_points=2000",
    "eval.num_samples=200", "generation.batch_size=200", "generation.tweedie=none", "eval.plot=false",
]


@pytest.fixture
def tiny_toy_config(tmp_path):
    return load_config(None, TINY_TOY + [f"run.output_dir={tmp_path}", "run.name=tiny", "train.iterations=20"])


@pytest.fixture
def ray_tmp():
    """A short RAY_TMPDIR of the test's own, removed afterwards (Ray's socket paths must stay under 108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="cdrl-ray-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
