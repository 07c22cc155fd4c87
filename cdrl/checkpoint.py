"""Checkpoint format: both nets, both EMAs, optimizers, LR schedules, step, RNG states, config.

A checkpoint is one ``torch.save`` file written atomically (temporary name, fsync, rename), so a crash
mid-write never leaves a file that looks complete, plus an integrity record beside it
(``checkpoint.pt.sha256``: JSON with the file's sha256, size and step), written after the file. Loading
verifies the record; a store takes a checkpoint as complete only when its record is there and matches.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "cdrl-checkpoint/1"
INTEGRITY_SUFFIX = ".sha256"


class CheckpointCorrupt(ValueError):
    """A checkpoint whose bytes do not match its integrity record (truncated, damaged) or that has none."""


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_checkpoint(trainer_state: dict, config: dict, data_shape: tuple[int, ...], extra: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "config": config,
        "data_shape": list(data_shape),
        "trainer": trainer_state,
        "rng": rng_state(),
        "extra": extra or {},
    }


def integrity_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + INTEGRITY_SUFFIX)


def integrity_record(payload: bytes, checkpoint: dict) -> dict:
    step = checkpoint.get("trainer", {}).get("step") if isinstance(checkpoint.get("trainer"), dict) else None
    return {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload), "step": step, "format": FORMAT}


def serialize(checkpoint: dict) -> tuple[bytes, bytes]:
    """(checkpoint file bytes, integrity record bytes) — what a remote store uploads, record last."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    payload = buffer.getvalue()
    return payload, json.dumps(integrity_record(payload, checkpoint)).encode()


def _write_atomically(payload: bytes, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(checkpoint: dict, path: str | Path) -> Path:
    """Write atomically, then the integrity record: a reader sees the previous pair or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload, record = serialize(checkpoint)
    integrity_path(path).unlink(missing_ok=True)  # the old record must never vouch for new bytes
    _write_atomically(payload, path)
    _write_atomically(record, integrity_path(path))
    return path


def verify(payload: bytes, record: bytes | None, name: str) -> None:
    """Raise CheckpointCorrupt naming ``name`` when ``payload`` does not match its integrity record."""
    if record is None:
        raise CheckpointCorrupt(f"{name}: no integrity record ({name}{INTEGRITY_SUFFIX}); the write did not complete")
    try:
        expected = json.loads(record)
        size, digest = int(expected["bytes"]), str(expected["sha256"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointCorrupt(f"{name}: unreadable integrity record ({err})") from err
    if len(payload) != size:
        raise CheckpointCorrupt(f"{name}: {len(payload)} bytes, the integrity record says {size} (truncated?)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointCorrupt(f"{name}: sha256 does not match the integrity record (damaged)")


def checkpoint_from_bytes(payload: bytes, name: str, map_location: str | torch.device = "cpu") -> dict:
    """Deserialize and check the format; raises ValueError naming ``name``."""
    try:
        checkpoint = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{name}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"{name}: not a {FORMAT} file")
    return checkpoint


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", require_integrity: bool = False) -> dict:
    """Load, verify against the integrity record when there is one (always, with ``require_integrity``),
    and check the format; raises ValueError (CheckpointCorrupt for a mismatch) naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    payload = path.read_bytes()
    record_file = integrity_path(path)
    if record_file.is_file() or require_integrity:
        verify(payload, record_file.read_bytes() if record_file.is_file() else None, str(path))
    return checkpoint_from_bytes(payload, str(path), map_location)
