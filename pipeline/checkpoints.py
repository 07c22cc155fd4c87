"""Where checkpoints live, which one is the latest, and whether it is intact: the pipeline's one checkpoint module.

The format (trainer state ↔ bytes, and the integrity record ``checkpoint.pt.sha256``: sha256, size, step) is
``cdrl.checkpoint``; this module holds the I/O policy around it, on a local path or an ``s3://`` URI (S3 through
``pipeline.storage``):

- **Reading** (``read_checkpoint``): a checkpoint file or a folder holding ``checkpoint.pt``; the integrity record
  is verified when present (always for a resume).
- **Local store** (``LocalCheckpointDir``, the local backend): ``step_XXXXXXXX.pt`` files in one folder, last K
  kept, written atomically; only complete ``step_*.pt`` names count.
- **Ray store** (the Ray backend): Ray Train's checkpoint manager keeps one folder per checkpoint,
  ``RUN_ROOT/checkpoint_<timestamp>/checkpoint.pt`` + ``.sha256``, under ``run.storage_path``. Uploads are ours
  (``upload_with_retries``): retried with backoff while storage is down, the record written last.
- **Latest**: in either store the newest checkpoint that verifies, with a warning for each one skipped, so a
  half-written or damaged checkpoint is never taken as the latest (``LocalCheckpointDir.load_latest``,
  ``load_newest_valid``); ``checkpoint_in_folder`` finds the newest one a folder of either store holds.
"""
from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from cdrl.checkpoint import (
    INTEGRITY_SUFFIX,
    CheckpointCorrupt,
    checkpoint_from_bytes,
    integrity_path,
    load_checkpoint,
    save_checkpoint,
    serialize,
    verify,
)
from cdrl.config import Config
from pipeline import storage

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_NAMES = (CHECKPOINT_FILE, CHECKPOINT_FILE + INTEGRITY_SUFFIX)  # upload order: the record last
RAY_FOLDER_PREFIX = "checkpoint_"
_LOCAL_NAME = re.compile(r"^step_(\d{8})\.pt$")


# ---------------------------------------------------------------------------------------------- reading
def checkpoint_file_uri(uri: str) -> str:
    """The checkpoint file that ``uri`` (a checkpoint file, or a folder holding checkpoint.pt) names."""
    return uri if uri.endswith(".pt") else storage.join(uri, CHECKPOINT_FILE)


def read_checkpoint(uri: str, require_integrity: bool = False, wait_s: float = 0.0) -> dict:
    """``uri`` is a checkpoint file, or a checkpoint folder holding checkpoint.pt. The integrity record is
    verified when present (always with ``require_integrity``); S3 reads retry for ``wait_s`` seconds."""
    uri = checkpoint_file_uri(uri)
    if not storage.is_s3(uri):
        return load_checkpoint(uri, require_integrity=require_integrity)
    payload = storage.with_retries(lambda: storage.read_bytes(uri), uri, "read", wait_s)
    record_uri = uri + INTEGRITY_SUFFIX
    record = None
    if require_integrity or storage.with_retries(lambda: storage.exists(record_uri), record_uri, "check", wait_s):
        try:
            record = storage.with_retries(lambda: storage.read_bytes(record_uri), record_uri, "read", wait_s)
        except FileNotFoundError:
            record = None
        verify(payload, record, uri)
    return checkpoint_from_bytes(payload, uri)


def checkpoint_in_folder(folder: str) -> str | None:
    """The checkpoint file a folder stands for, or None: its own ``checkpoint.pt`` (a Ray checkpoint folder),
    else the newest Ray ``checkpoint_*`` folder's (a Ray run folder), else its latest ``step_*.pt`` (a local
    store); local or s3://."""
    if storage.exists(storage.join(folder, CHECKPOINT_FILE)):
        return storage.join(folder, CHECKPOINT_FILE)
    for name in reversed(ray_checkpoint_folders(folder)):  # Ray names them by timestamp: the last is the newest
        candidate = storage.join(storage.join(folder, name), CHECKPOINT_FILE)
        if storage.exists(candidate):
            return candidate
    if not storage.is_s3(folder):
        latest = LocalCheckpointDir(folder).latest()
        return str(latest) if latest else None
    steps = [name for name in storage.list_names(folder) if _LOCAL_NAME.match(name)]
    return storage.join(folder, steps[-1]) if steps else None


def _fall_back(error: Exception) -> None:
    print(f"warning: {error}; falling back to the previous checkpoint", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ local store
class LocalCheckpointDir:
    """The local backend's store: ``step_XXXXXXXX.pt`` files (each with its integrity record) in one folder,
    the last ``keep_last`` kept. Files are written atomically (cdrl.checkpoint.save_checkpoint)."""

    def __init__(self, folder: str | Path, keep_last: int = 3):
        self.folder = Path(folder)
        self.keep_last = keep_last

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints in the folder, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _LOCAL_NAME.match(p.name)))

    def path(self, step: int) -> Path:
        return self.folder / f"step_{step:08d}.pt"

    def save(self, step: int, checkpoint: dict) -> Path:
        """Write the checkpoint of ``step``, then delete all but the newest ``keep_last``."""
        path = save_checkpoint(checkpoint, self.path(step))
        for old in self.steps()[: -self.keep_last]:
            self.path(old).unlink(missing_ok=True)
            integrity_path(self.path(old)).unlink(missing_ok=True)
        return path

    def latest(self) -> Path | None:
        """The newest checkpoint file (not verified), or None."""
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def load_latest(self) -> tuple[Path, dict] | None:
        """(path, checkpoint) of the newest checkpoint that verifies; a warning for each one skipped."""
        for step in reversed(self.steps()):
            try:
                return self.path(step), load_checkpoint(self.path(step), require_integrity=True)
            except ValueError as err:
                _fall_back(err)
        return None


def local_store(config: Config, run_dir: Path) -> LocalCheckpointDir:
    """The local backend's store of this run: ``run.storage_path``, else ``RUN_DIR/checkpoints``."""
    return LocalCheckpointDir(config.run.storage_path or run_dir / "checkpoints", config.run.keep_checkpoints)


# -------------------------------------------------------------------------------------------- Ray store
def storage_root(config: Config) -> str:
    """Where Ray Train keeps this run's checkpoints: s3://… as given, local folders made absolute."""
    if config.run.storage_path and storage.is_s3(config.run.storage_path):
        return config.run.storage_path.rstrip("/")
    return str(Path(config.run.storage_path or Path(config.run.output_dir) / "ray").absolute())


def run_root(config: Config) -> str:
    """The folder of this run's checkpoint folders (Ray Train's experiment folder: ``STORAGE_ROOT/RUN_NAME``)."""
    return storage.join(storage_root(config), config.run.name)


def checkpoint_uri(config: Config, checkpoint_path: str) -> str:
    """A user-facing URI of the checkpoint file inside a Ray checkpoint folder (Ray gives S3 paths bare)."""
    prefix = "s3://" if storage.is_s3(storage_root(config)) else ""
    return f"{prefix}{checkpoint_path.rstrip('/')}/{CHECKPOINT_FILE}"


def ray_filesystem(uri: str, wait_s: float) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a folder of the Ray store, as Ray Train sees it: for S3 a filesystem whose
    requests back off and retry for ``wait_s`` seconds (so Ray Train's own writes ride out an outage as our
    uploads do) and the path without ``s3://``; locally the absolute path."""
    if storage.is_s3(uri):
        return storage.patient_s3_filesystem(uri, wait_s), uri[len("s3://") :].rstrip("/")
    return storage.resolve(uri)


def ray_storage(config: Config) -> dict[str, Any]:
    """RunConfig storage arguments: the storage root, with its filesystem for S3 (``ray_filesystem``)."""
    root = storage_root(config)
    if not storage.is_s3(root):
        return {"storage_path": root}
    filesystem, path = ray_filesystem(root, config.faults.storage_wait_s)
    return {"storage_path": path, "storage_filesystem": filesystem}


def check_storage(config: Config) -> None:
    """Fail before training when the checkpoint store is an unreachable or missing S3 bucket."""
    root = storage_root(config)
    if storage.is_s3(root):
        storage.list_names(root)  # raises StorageError naming the URI


def ray_checkpoint_folders(root: str) -> list[str]:
    """Names of the checkpoint folders under a Ray Train run folder, oldest first (names carry a timestamp)."""
    return [name for name in storage.list_folders(root) if name.startswith(RAY_FOLDER_PREFIX)]


def load_newest_valid(root: str, newest: str, wait_s: float = 0.0) -> tuple[str, dict]:
    """(folder URI, checkpoint) of the newest checkpoint folder under run folder ``root``, not newer than
    ``newest``, that verifies. Raises CheckpointCorrupt (a ValueError) when none does."""
    names = storage.with_retries(lambda: ray_checkpoint_folders(root), root, "list", wait_s)
    for name in reversed([n for n in names if n <= newest] or [newest]):
        uri = storage.join(root, name)
        try:
            return uri, read_checkpoint(uri, require_integrity=True, wait_s=wait_s)
        except (ValueError, FileNotFoundError) as err:
            _fall_back(err)
    raise CheckpointCorrupt(f"no checkpoint under {root} passes its integrity check")


def resume_state(root: str, wait_s: float, rank: int) -> dict | None:
    """In a Ray Train worker: the newest checkpoint of this run that passes its integrity check (older ones
    are tried in turn), or None for a fresh run."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    uri, state = load_newest_valid(root, Path(checkpoint.path).name, wait_s)
    if rank == 0:
        print(f"resuming {Path(root).name} from {uri} (step {state['trainer']['step']})", flush=True)
    return state


def staged_checkpoint(state: dict):
    """A ``ray.train.Checkpoint`` of ``state`` in a temporary local folder (checkpoint.pt and its record), for
    ``ray.train.report``; delete it with ``discard_staged`` once reported."""
    import ray.train

    payload, record = serialize(state)
    folder = Path(tempfile.mkdtemp(prefix="cdrl-checkpoint-"))
    for name, content in zip(CHECKPOINT_NAMES, (payload, record)):
        (folder / name).write_bytes(content)
    return ray.train.Checkpoint.from_directory(str(folder))


def discard_staged(checkpoint) -> None:
    """Delete the temporary folder of a ``staged_checkpoint``."""
    shutil.rmtree(checkpoint.path, ignore_errors=True)


def upload_folder(filesystem: pafs.FileSystem, fs_path: str, files: list[tuple[str, bytes]], uri: str, wait_s: float) -> None:
    """Write ``files`` (name, bytes) into ``fs_path`` on ``filesystem`` in order, each retried while storage is
    unreachable (the integrity record goes last, so an interrupted upload never looks complete)."""
    def write(name: str, payload: bytes) -> None:
        filesystem.create_dir(fs_path, recursive=True)
        with filesystem.open_output_stream(f"{fs_path}/{name}") as stream:
            stream.write(payload)

    for name, payload in files:
        storage.with_retries(lambda: write(name, payload), storage.join(uri, name), "write", wait_s)


def upload_with_retries(root: str, wait_s: float):
    """A ``checkpoint_upload_fn`` for ray.train.report: our own upload into ``ROOT/CHECKPOINT_DIR_NAME`` (``root``
    is ``run_root``, the folder Ray Train names its experiment folder: ``storage_path/RunConfig.name``), retried
    with backoff while storage is unreachable (Ray's own retries come back-to-back), the integrity record
    written last. Returns the public ``ray.train.Checkpoint(path, filesystem)`` of the uploaded folder."""
    import ray.train

    ray_fs, root_path = ray_filesystem(root, wait_s)
    writer, _ = storage.resolve(root)  # fails within seconds, so that with_retries (and its warnings) takes over

    def upload(checkpoint, checkpoint_dir_name: str):
        destination = f"{root_path}/{checkpoint_dir_name}"
        files = [(name, (Path(checkpoint.path) / name).read_bytes()) for name in CHECKPOINT_NAMES]
        upload_folder(writer, destination, files, storage.join(root, checkpoint_dir_name), wait_s)
        return ray.train.Checkpoint(path=destination, filesystem=ray_fs)

    return upload
