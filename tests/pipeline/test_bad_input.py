"""Bad input stops pipeline/train.py before any training: one `error:` line naming the file or key, exit 2."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.datasets.manifest import ModelTransform
from pipeline.datasets.sources import in_memory_source
from pipeline.datasets.writer import write_dataset
from tests.conftest import TINY_TOY
from tests.pipeline.dataset_edits import data_table, edit_manifest, replace_shard

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.subprocess


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def toy_dataset(folder: Path) -> Path:
    values = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    source = in_memory_source(values, (2,), None, ModelTransform(), None, name="pts", origin="test", provenance={})
    write_dataset(source, str(folder), num_shards=2)
    return folder


def flip_bytes(folder: Path) -> str:
    shard = sorted(folder.glob("shard-*.parquet"))[0]
    payload = bytearray(shard.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    shard.write_bytes(bytes(payload))
    return shard.name


def delete_shard(folder: Path) -> str:
    shard = sorted(folder.glob("shard-*.parquet"))[1]
    shard.unlink()
    return shard.name


def nan_values(folder: Path) -> str:
    values = np.zeros((32, 2), dtype=np.float32)
    values[3, 1] = np.nan
    return replace_shard(folder, data_table(values))


def wrong_shape(folder: Path) -> str:
    edit_manifest(folder, lambda raw: raw.update(item_shape=[3]))
    return "item_shape"


def empty(folder: Path) -> str:
    replace_shard(folder, data_table(np.zeros((0, 2), dtype=np.float32)), 0)
    replace_shard(folder, data_table(np.zeros((0, 2), dtype=np.float32)), 1)
    return "empty"


def no_manifest(folder: Path) -> str:
    (folder / "manifest.json").unlink()
    return "manifest"


@pytest.mark.parametrize("damage", [flip_bytes, delete_shard, nan_values, wrong_shape, empty, no_manifest])
def test_damaged_dataset(damage, tmp_path):
    folder = toy_dataset(tmp_path / "data")
    expected = damage(folder)
    proc = train(tmp_path, f"data.uri={folder}")
    assert_one_error_line(proc, expected)


def test_unreachable_s3_for_data(tmp_path):
    proc = train(tmp_path, "data.uri=s3://bucket/data", env=s3_env(closed_port()))
    assert_one_error_line(proc, "s3://bucket/data")


def test_unreachable_s3_for_checkpoints(tmp_path):
    folder = toy_dataset(tmp_path / "data")
    proc = train(tmp_path, f"data.uri={folder}", "run.storage_path=s3://bucket/ckpt", "tracking.enabled=false",
                 env=s3_env(closed_port()))
    assert_one_error_line(proc, "s3://bucket/ckpt")


def test_unreachable_mlflow_server(tmp_path):
    folder = toy_dataset(tmp_path / "data")
    port = closed_port()
    proc = train(tmp_path, f"data.uri={folder}", f"tracking.uri=http://127.0.0.1:{port}")
    assert_one_error_line(proc, f"http://127.0.0.1:{port}")


def test_unknown_config_key(tmp_path):
    assert_one_error_line(train(tmp_path, "train.learning_rate=1"), "train.learning_rate")


def s3_env(port: int) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_DEFAULT_REGION": "us-east-1"}


def train(tmp_path: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "pipeline/train.py", *TINY_TOY, f"run.output_dir={tmp_path}", *overrides],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})})


def assert_one_error_line(proc: subprocess.CompletedProcess, expected: str) -> None:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-3000:]
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout  # stopped before any training
