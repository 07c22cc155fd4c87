"""The pipeline's one storage layer: whole-object reads, writes and listings on a local folder or on S3
(``s3://bucket/prefix``), through pyarrow.fs, and retries with backoff while storage is unreachable.

Datasets, reference statistics, checkpoints (``pipeline.checkpoints``), the registry and Tune all go through it.

S3 settings come from the standard environment variables: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``)
for a non-AWS server such as SeaweedFS, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` and
``AWS_DEFAULT_REGION`` (or ``AWS_REGION``). The filesystem is built directly (not with ``FileSystem.from_uri``)
so that connect timeouts and retries stay low: an unreachable endpoint fails in about a second.
"""
from __future__ import annotations

import functools
import io
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.cli import one_line

S3_CONNECT_TIMEOUT_S = 3.0
S3_MAX_ATTEMPTS = 3
T = TypeVar("T")


class StorageError(OSError):
    """Storage (a local folder or an S3 endpoint) could not be reached or written; names the URI."""


def is_s3(uri: str) -> bool:
    """Whether ``uri`` names an S3 location."""
    return uri.startswith("s3://")


def join(uri: str, name: str) -> str:
    """``uri/name`` for a local folder or an S3 prefix."""
    return f"{uri.rstrip('/')}/{name}"


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path inside it for a local path, ``file://`` URI or ``s3://`` URI."""
    if is_s3(uri):
        bucket_and_key = uri[len("s3://") :].rstrip("/")
        with _storage_errors(uri, "cannot set up S3 access to"):
            return _s3_filesystem(bucket_and_key.split("/")[0], *_s3_settings()), bucket_and_key
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(f"{uri}: unsupported storage scheme; use a local path or s3://bucket/prefix")
    local_path = uri[len("file://") :] if uri.startswith("file://") else uri
    return pafs.LocalFileSystem(), os.path.abspath(local_path)


def exists(uri: str) -> bool:
    """Whether a file or object exists at ``uri``."""
    filesystem, path = resolve(uri)
    with _storage_errors(uri, "cannot check"):
        return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(uri: str) -> bytes:
    """The whole content of the file or object at ``uri``; FileNotFoundError when it does not exist."""
    filesystem, path = resolve(uri)
    with _storage_errors(uri, "cannot read"), filesystem.open_input_stream(path) as stream:
        return stream.read()


def write_bytes(uri: str, payload: bytes) -> None:
    """Write ``payload`` at ``uri`` atomically: readers see the old content or the new one, never a part.

    Locally the bytes go to a temporary sibling that is then renamed over the target; an S3 object
    only becomes visible once its upload is complete.
    """
    filesystem, path = resolve(uri)
    with _storage_errors(uri, "cannot write"):
        if is_s3(uri):
            with filesystem.open_output_stream(path) as stream:
                stream.write(payload)
            return
        filesystem.create_dir(os.path.dirname(path), recursive=True)
        temporary = f"{path}.tmp-{os.getpid()}"
        with filesystem.open_output_stream(temporary) as stream:
            stream.write(payload)
        filesystem.move(temporary, path)


def delete(uri: str) -> None:
    """Delete the file or object at ``uri`` if it exists."""
    filesystem, path = resolve(uri)
    with _storage_errors(uri, "cannot delete"):
        if filesystem.get_file_info(path).type != pafs.FileType.NotFound:
            filesystem.delete_file(path)


def list_names(uri: str) -> list[str]:
    """Sorted names of the files directly under the folder or prefix ``uri`` (empty when there is none)."""
    filesystem, path = resolve(uri)
    with _storage_errors(uri, "cannot list"):
        infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos if info.type == pafs.FileType.File)


def list_folders(uri: str) -> list[str]:
    """Sorted names of the folders directly under the folder or prefix ``uri`` (empty when there is none)."""
    filesystem, path = resolve(uri)
    with _storage_errors(uri, "cannot list"):
        infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)


def modified_ns(uris: list[str]) -> dict[str, int]:
    """Modification times (ns) of those of ``uris`` that are files, in one listing request per filesystem
    (all of ``uris`` must be on the same filesystem as the first)."""
    if not uris:
        return {}
    filesystem, _ = resolve(uris[0])
    paths = {resolve(uri)[1]: uri for uri in uris}
    with _storage_errors(uris[0], "cannot check"):
        infos = filesystem.get_file_info(list(paths))
    return {paths[info.path]: info.mtime_ns for info in infos if info.type == pafs.FileType.File}


def _s3_settings() -> tuple[str | None, str | None]:
    """(endpoint URL, region) from the environment."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    return endpoint, region


def patient_s3_filesystem(uri: str, wait_s: float) -> pafs.PyFileSystem:
    """The S3 filesystem Ray Train's controller and workers write through (its checkpoint manager's snapshot,
    deletions of old checkpoints): every request goes through ``with_retries``, so an outage shorter than
    ``wait_s`` costs a wait and two log lines, not the run, and a longer one ends it with one line naming
    the endpoint (``StorageUnavailable``).

    It travels to Ray's processes as ``PatientS3``'s settings and is rebuilt there, credentials from that
    process's environment (a pickled ``S3FileSystem`` would carry the secret key, and lose its retry strategy)."""
    bucket = uri[len("s3://") :].split("/")[0]
    endpoint, region = _s3_settings()
    return pafs.PyFileSystem(PatientS3(bucket, endpoint, region, wait_s))


class PatientS3(pafs.FileSystemHandler):
    """``pafs.PyFileSystem`` handler: the quick ``_s3_filesystem`` of ``bucket``, each call retried by
    ``with_retries`` for ``wait_s``. Writes are buffered and sent whole on close, so that the retried
    operation is the upload itself. Only the four settings are pickled."""

    def __init__(self, bucket: str, endpoint: str | None, region: str | None, wait_s: float):
        self.settings = (bucket, endpoint, region, wait_s)

    def __reduce__(self):
        return PatientS3, self.settings

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PatientS3) and other.settings == self.settings

    def __hash__(self) -> int:
        return hash(self.settings)

    @property
    def s3(self) -> pafs.S3FileSystem:
        return _s3_filesystem(*self.settings[:3])

    def retry(self, action: str, path: str, operation: Callable[[], T]) -> T:
        return with_retries(operation, f"s3://{path}", action, self.settings[3])

    def put(self, path: str, payload: bytes, metadata) -> None:
        def upload() -> None:
            with self.s3.open_output_stream(path, metadata=metadata) as stream:
                stream.write(payload)

        self.retry("write", path, upload)

    def get_type_name(self) -> str:
        return "patient-s3"

    def normalize_path(self, path):
        return self.s3.normalize_path(path)

    def get_file_info(self, paths):
        return self.retry("read", paths[0] if paths else self.settings[0], lambda: self.s3.get_file_info(paths))

    def get_file_info_selector(self, selector):
        return self.retry("list", selector.base_dir, lambda: self.s3.get_file_info(selector))

    def create_dir(self, path, recursive):
        self.retry("create", path, lambda: self.s3.create_dir(path, recursive=recursive))

    def delete_dir(self, path):
        self.retry("delete", path, lambda: self.s3.delete_dir(path))

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.retry("delete", path, lambda: self.s3.delete_dir_contents(path, missing_dir_ok=missing_dir_ok))

    def delete_root_dir_contents(self):
        raise PermissionError("PatientS3 never deletes a whole bucket")

    def delete_file(self, path):
        self.retry("delete", path, lambda: self.s3.delete_file(path))

    def move(self, src, dest):
        self.retry("move", src, lambda: self.s3.move(src, dest))

    def copy_file(self, src, dest):
        self.retry("copy", src, lambda: self.s3.copy_file(src, dest))

    def open_input_stream(self, path):
        return self.retry("read", path, lambda: self.s3.open_input_stream(path))

    def open_input_file(self, path):
        return self.retry("read", path, lambda: self.s3.open_input_file(path))

    def open_output_stream(self, path, metadata):
        return pa.PythonFile(_UploadOnClose(self, path, metadata), mode="w")

    def open_append_stream(self, path, metadata):
        raise NotImplementedError("S3 objects cannot be appended to")


class _UploadOnClose(io.BytesIO):
    """An output stream that sends its bytes in one retried upload when closed (``PatientS3.put``)."""

    def __init__(self, handler: PatientS3, path: str, metadata):
        super().__init__()
        self.handler, self.path, self.metadata = handler, path, metadata

    def close(self) -> None:
        if not self.closed:
            payload = self.getvalue()
            super().close()
            self.handler.put(self.path, payload, self.metadata)


@functools.lru_cache(maxsize=16)
def _s3_filesystem(bucket: str, endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    """An S3 filesystem for ``bucket`` with low connect timeouts and few retries; credentials from the env."""
    options: dict = {
        "connect_timeout": S3_CONNECT_TIMEOUT_S,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS),
    }
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        options.update(endpoint_override=parts.netloc, scheme=parts.scheme, region=region or "us-east-1")
    else:
        options["region"] = region or pafs.resolve_s3_region(bucket)
    return pafs.S3FileSystem(**options)


def _describe(uri: str) -> str:
    """``uri`` plus, for S3, the endpoint it goes to."""
    if not is_s3(uri):
        return uri
    endpoint = _s3_settings()[0] or "AWS default endpoint"
    return f"{uri} (S3 endpoint {endpoint})"


@contextmanager
def _storage_errors(uri: str, action: str) -> Iterator[None]:
    """Turn pyarrow's I/O errors into one-line StorageErrors naming the URI; FileNotFoundError passes through."""
    try:
        yield
    except (FileNotFoundError, StorageError):
        raise
    except OSError as error:
        raise StorageError(f"{action} {_describe(uri)}: {one_line(error)}") from error


class StorageUnavailable(StorageError):
    """Storage stayed unreachable for the whole retry window; the message is one line naming the endpoint."""


def with_retries(operation: Callable[[], T], uri: str, action: str, wait_s: float,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``operation``, retrying with exponential backoff (1 s doubling to 30 s) for up to ``wait_s``
    seconds while storage is unreachable. One warning line when the outage starts, one when it ends."""
    deadline = time.monotonic() + wait_s
    delay, failures = 1.0, 0
    while True:
        try:
            result = operation()
        except FileNotFoundError:
            raise
        except OSError as error:  # StorageError and pyarrow's raw OSErrors
            failures += 1
            if failures == 1:
                print(f"warning: cannot {action} {_describe(uri)} ({one_line(error)}); retrying for up to "
                      f"{wait_s:.0f} s", file=sys.stderr, flush=True)
            if time.monotonic() + delay > deadline:
                raise StorageUnavailable(f"storage {_describe(uri)} unreachable for {wait_s:.0f} s while trying "
                                         f"to {action} it: {one_line(error)}") from error
            sleep(delay)
            delay = min(2 * delay, 30.0)
            continue
        if failures:
            print(f"storage {_describe(uri)} answers again after {failures} failed attempt(s)", file=sys.stderr,
                  flush=True)
        return result
