"""Checkpoints in a local folder for in-process runs: step_XXXXXXXX.pt files, last K kept.

Files are written atomically (cdrl.checkpoint.save_checkpoint), and only complete ``step_*.pt`` names count,
so a half-written checkpoint is never taken as the latest. Loading verifies each file against its integrity
record and falls back, with a warning, to the previous checkpoint when the newest is corrupt or truncated.
Ray runs use Ray Train's checkpoint manager (pipeline.checkpoint_io).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from cdrl.checkpoint import integrity_path, load_checkpoint, save_checkpoint

_NAME = re.compile(r"^step_(\d{8})\.pt$")


class LocalCheckpointDir:
    def __init__(self, folder: str | Path, keep_last: int = 3):
        self.folder = Path(folder)
        self.keep_last = keep_last

    def steps(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _NAME.match(p.name)))

    def path(self, step: int) -> Path:
        return self.folder / f"step_{step:08d}.pt"

    def save(self, step: int, checkpoint: dict) -> Path:
        path = save_checkpoint(checkpoint, self.path(step))
        for old in self.steps()[: -self.keep_last]:
            self.path(old).unlink(missing_ok=True)
            integrity_path(self.path(old)).unlink(missing_ok=True)
        return path

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def load_latest(self) -> tuple[Path, dict] | None:
        """(path, checkpoint) of the newest checkpoint that verifies; a warning for each one skipped."""
        for step in reversed(self.steps()):
            try:
                return self.path(step), load_checkpoint(self.path(step), require_integrity=True)
            except ValueError as err:
                print(f"warning: {err}; falling back to the previous checkpoint", file=sys.stderr)
        return None
