"""Infrastructure failures that end a run: found inside Ray Train's error and told in one line.

When S3 stays down longer than ``faults.storage_wait_s`` a worker raises StorageUnavailable naming the
endpoint; Ray Train wraps it (worker group error, task error, retries). The driver digs the original
message back out so the user sees ``error: storage s3://… (S3 endpoint http://…) unreachable for 600 s …``
instead of a long traceback.
"""
from __future__ import annotations

import re

from pipeline.storage import StorageError

_STORAGE_LINE = re.compile(r"storage \S+ \(S3 endpoint [^)]*\) unreachable for [^\n]*")


class InfrastructureFailure(RuntimeError):
    """Storage or tracking stayed unreachable past its retry window; one line naming the endpoint."""


def _children(error: BaseException) -> list[BaseException]:
    found = [error.__cause__, error.__context__, getattr(error, "cause", None),
             getattr(error, "controller_failure", None)]
    found += list((getattr(error, "worker_failures", None) or {}).values())
    return [e for e in found if isinstance(e, BaseException)]


def infrastructure_failure(error: BaseException) -> str | None:
    """The one-line storage message inside ``error`` (however deeply Ray wrapped it), else None."""
    seen, stack = set(), [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, StorageError):
            return " ".join(str(current).split())
        stack.extend(_children(current))
    match = _STORAGE_LINE.search(str(error))
    return match.group(0) if match else None
