"""Shared fixtures: small configurations, the real local S3 / MLflow stack, and the session's Ray head."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdrl.config import load_config
from tests.ray_head import RayHead, ray_head
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


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayHead]:
    """One Ray head (`ray start --head`) for the session's Ray tests. Their drivers join it through RAY_ADDRESS,
    as under `ray job submit`, so no fit pays for starting and stopping a Ray of its own (~8 s on 2 cores);
    the fault test keeps the embedded default, a Ray the driver starts itself."""
    folder = Path(tempfile.mkdtemp(prefix="cdrl-ray-", dir="/tmp"))
    with ray_head(folder) as head:
        yield head
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def ray_tmp():
    """A short RAY_TMPDIR of the test's own, removed afterwards (Ray's socket paths must stay under 108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="cdrl-ray-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
