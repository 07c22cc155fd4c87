"""Read a checkpoint from a local path or an s3:// URI (S3 settings from the AWS_* environment)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from cdrl.checkpoint import load_checkpoint


def read_checkpoint(uri: str) -> dict:
    """``uri`` is a checkpoint file, or a Ray Train checkpoint folder holding checkpoint.pt."""
    if not uri.endswith(".pt"):
        uri = uri.rstrip("/") + "/checkpoint.pt"
    if not uri.startswith("s3://"):
        return load_checkpoint(uri)
    from pipeline.datasets.storage import read_bytes

    payload = read_bytes(uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(uri).name
        local.write_bytes(payload)
        return load_checkpoint(local)
