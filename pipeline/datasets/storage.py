"""Whole-object reads and writes on a local folder or on S3 (``s3://bucket/prefix``), through pyarrow.fs.

S3 settings come from the standard environment variables: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``)
for a non-AWS server such as SeaweedFS, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` and
``AWS_DEFAULT_REGION`` (or ``AWS_REGION``). The filesystem is built directly (not with ``FileSystem.from_uri``)
so that connect timeouts and retries stay low: an unreachable endpoint fails in about a second.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from pipeline.datasets.errors import StorageError, one_line

S3_CONNECT_TIMEOUT_S = 3.0
S3_MAX_ATTEMPTS = 3
T = TypeVar("T")


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


def _s3_settings() -> tuple[str | None, str | None]:
    """(endpoint URL, region) from the environment."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    return endpoint, region


def patient_s3_filesystem(uri: str, wait_s: float) -> pafs.S3FileSystem:
    """An S3 filesystem whose every request retries with the AWS standard backoff (exponential, jittered,
    at most 20 s apart) for roughly ``wait_s`` seconds: for Ray Train's own storage writes (its checkpoint
    manager's snapshot, deletions), which would otherwise fail on the first connection error."""
    bucket = uri[len("s3://") :].split("/")[0]
    return _s3_filesystem(bucket, *_s3_settings(), max_attempts=max(S3_MAX_ATTEMPTS, int(wait_s / 10) + 1))


@functools.lru_cache(maxsize=16)
def _s3_filesystem(bucket: str, endpoint: str | None, region: str | None,
                   max_attempts: int = S3_MAX_ATTEMPTS) -> pafs.S3FileSystem:
    """An S3 filesystem for ``bucket`` with low connect timeouts and few retries; credentials from the env."""
    options: dict = {
        "connect_timeout": S3_CONNECT_TIMEOUT_S,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts),
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
