"""Checkpoints carry a content hash; a corrupt or truncated newest one is skipped with a warning.

The Ray/S3 store uses the same records (pipeline/checkpoints.py).
"""
from __future__ import annotations

import json

import pytest

from cdrl.checkpoint import CheckpointCorrupt, integrity_path, load_checkpoint
from pipeline.checkpoints import LocalCheckpointDir, load_newest_valid, read_checkpoint


def state(step: int) -> dict:
    return {"format": "cdrl-checkpoint/1", "trainer": {"step": step}, "payload": list(range(1000))}


@pytest.fixture
def store(tmp_path):
    store = LocalCheckpointDir(tmp_path / "ckpt", keep_last=3)
    for step in (10, 20, 30):
        store.save(step, state(step))
    return store


def test_record_names_hash_size_and_step(store):
    record = json.loads(integrity_path(store.path(30)).read_text())
    assert record["step"] == 30 and record["bytes"] == store.path(30).stat().st_size and len(record["sha256"]) == 64
    assert sorted(p.name for p in store.folder.iterdir()) == sorted(
        n for s in (10, 20, 30) for n in (f"step_{s:08d}.pt", f"step_{s:08d}.pt.sha256"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_record"])
def test_damaged_newest_falls_back_to_the_previous(store, damage, capsys):
    newest = store.path(30)
    if damage == "truncate":
        newest.write_bytes(newest.read_bytes()[:-100])
    elif damage == "flip":
        payload = bytearray(newest.read_bytes())
        payload[len(payload) // 2] ^= 1
        newest.write_bytes(bytes(payload))
    else:  # a crash between the file and its record
        integrity_path(newest).unlink()
    path, checkpoint = store.load_latest()
    assert path == store.path(20) and checkpoint["trainer"]["step"] == 20
    warning = capsys.readouterr().err
    assert "step_00000030.pt" in warning and "falling back to the previous checkpoint" in warning
    with pytest.raises(CheckpointCorrupt, match="step_00000030.pt"):
        load_checkpoint(newest, require_integrity=True)


def test_every_checkpoint_damaged_is_no_checkpoint(store):
    for step in store.steps():
        store.path(step).write_bytes(b"garbage")
    assert store.load_latest() is None


def test_ray_layout_takes_the_newest_folder_that_verifies(tmp_path, capsys):
    run_root = tmp_path / "ray" / "run"
    for name, step in (("checkpoint_2026-01-01_00-00-01.000000", 10), ("checkpoint_2026-01-01_00-00-02.000000", 20)):
        LocalCheckpointDir(run_root / name).save(0, state(step))  # step_00000000.pt; rename to the Ray layout
        folder = run_root / name
        (folder / "step_00000000.pt").rename(folder / "checkpoint.pt")
        (folder / "step_00000000.pt.sha256").rename(folder / "checkpoint.pt.sha256")
    newest = run_root / "checkpoint_2026-01-01_00-00-02.000000" / "checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[:50])
    uri, checkpoint = load_newest_valid(str(run_root), "checkpoint_2026-01-01_00-00-02.000000")
    assert uri.endswith("checkpoint_2026-01-01_00-00-01.000000") and checkpoint["trainer"]["step"] == 10
    assert "falling back" in capsys.readouterr().err
    with pytest.raises(CheckpointCorrupt):
        read_checkpoint(str(newest.parent))  # an explicit read verifies too
