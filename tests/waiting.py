"""Polling for the integration tests: wait until a condition holds, failing fast when the thing that
should make it hold has died."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout_s: float, alive: Callable[[], bool] = lambda: True,
             state: Callable[[], str] = lambda: "", interval_s: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy and return that. Fail with ``what`` (and
    ``state()``, e.g. the cluster's) when ``alive()`` turns false or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert alive(), f"gone while waiting for {what}: {state()}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}: {state()}")
        time.sleep(interval_s)
