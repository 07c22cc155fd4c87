"""Server processes of the local stack: their environment, waiting for them to answer, stopping their
process groups, and telling a live stack server from an unrelated process that reused its pid."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from infra.local.errors import StackStartError

STOP_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.2


def server_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without the caller's own AWS settings, plus ``extra``."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    return {**inherited, **extra}


def wait_until_ready(
    ready: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    what: str,
    log: Path,
    timeout: float,
) -> float:
    """Poll ``ready`` until it holds; return the seconds waited. Raise if ``proc`` exits or time runs out."""
    start = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise StackStartError(f"{what} exited with code {proc.returncode} during start-up", log)
        if ready():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise StackStartError(f"{what} did not answer within {timeout:.0f} s", log)
        time.sleep(POLL_INTERVAL_S)


def stop_process_groups(leaders: dict[int, Callable[[], bool]], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process groups led by the keys of ``leaders`` (pid -> is-alive check) together;
    SIGKILL whatever is left in them once every leader has exited or ``timeout`` has passed."""
    for pgid in leaders:
        signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(is_alive() for is_alive in leaders.values()) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
    for pgid in leaders:
        signal_group(pgid, signal.SIGKILL)


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to a process group that may already be gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def pid_alive(pid: int) -> bool:
    """Whether a process (not necessarily our child) exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stack_process(pid: int, dir: Path) -> bool:
    """Whether ``pid`` still is a server of the stack in ``dir``, not an unrelated process that reused
    the pid: a live process group leader whose command line names ``dir`` (checked where /proc exists)."""
    try:
        if os.getpgid(pid) != pid:
            return False
    except ProcessLookupError:
        return False
    if not Path("/proc/self").exists():
        return True
    try:
        return f"{dir}{os.sep}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def run_processes(marker: str) -> list[int]:
    """Pids whose environment holds ``marker`` (a run's ``RAY_TMPDIR=…``): a run's driver and Ray processes."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids
