"""Checkpoints on a local path or an s3:// URI (S3 settings from the AWS_* environment): read, verify, upload.

Every checkpoint has an integrity record beside it (cdrl.checkpoint); reads verify it. Ray Train runs keep
one folder per checkpoint (``RUN_ROOT/checkpoint_<timestamp>/checkpoint.pt`` + ``.sha256``): uploads write the
record last and retry with backoff while storage is down, and a resume takes the newest folder that verifies,
warning about each one it skips, so a half-written or damaged checkpoint is never taken as the latest.
"""
from __future__ import annotations

import sys
import pyarrow.fs as pafs

from cdrl.checkpoint import INTEGRITY_SUFFIX, checkpoint_from_bytes, load_checkpoint, verify
from pipeline.datasets import storage

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_NAMES = (CHECKPOINT_FILE, CHECKPOINT_FILE + INTEGRITY_SUFFIX)  # upload order: the record last


def read_checkpoint(uri: str, require_integrity: bool = False, wait_s: float = 0.0) -> dict:
    """``uri`` is a checkpoint file, or a checkpoint folder holding checkpoint.pt. The integrity record is
    verified when present (always with ``require_integrity``); S3 reads retry for ``wait_s`` seconds."""
    if not uri.endswith(".pt"):
        uri = storage.join(uri, CHECKPOINT_FILE)
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


def checkpoint_folders(run_root: str) -> list[str]:
    """Names of the checkpoint folders under a Ray Train run folder, oldest first (names carry a timestamp)."""
    filesystem, path = storage.resolve(run_root)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as error:
        raise storage.StorageError(f"cannot list {run_root}: {storage.one_line(error)}") from error
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))


def load_newest_valid(run_root: str, newest: str, wait_s: float = 0.0) -> tuple[str, dict]:
    """(folder URI, checkpoint) of the newest checkpoint folder not newer than ``newest`` that verifies.

    Raises CheckpointCorrupt (a ValueError) when none does.
    """
    from cdrl.checkpoint import CheckpointCorrupt

    names = storage.with_retries(lambda: checkpoint_folders(run_root), run_root, "list", wait_s)
    for name in reversed([n for n in names if n <= newest] or [newest]):
        uri = storage.join(run_root, name)
        try:
            return uri, read_checkpoint(uri, require_integrity=True, wait_s=wait_s)
        except (ValueError, FileNotFoundError) as err:
            print(f"warning: {err}; falling back to the previous checkpoint", file=sys.stderr, flush=True)
    raise CheckpointCorrupt(f"no checkpoint under {run_root} passes its integrity check")


def upload_folder(filesystem: pafs.FileSystem, fs_path: str, files: list[tuple[str, bytes]], uri: str,
                  wait_s: float) -> None:
    """Write ``files`` (name, bytes) into ``fs_path`` on ``filesystem`` in order, each retried while storage is
    unreachable (the integrity record goes last, so an interrupted upload never looks complete)."""
    def write(name: str, payload: bytes) -> None:
        filesystem.create_dir(fs_path, recursive=True)
        with filesystem.open_output_stream(f"{fs_path}/{name}") as stream:
            stream.write(payload)

    for name, payload in files:
        storage.with_retries(lambda: write(name, payload), storage.join(uri, name), "write", wait_s)


def checkpoint_files(payload: bytes, record: bytes) -> list[tuple[str, bytes]]:
    """The files of a checkpoint folder, in upload order."""
    return list(zip(CHECKPOINT_NAMES, (payload, record)))
