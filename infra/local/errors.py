"""The local stack's errors: one for a stack that cannot be started, stopped or found, one for a server that
did not come up (with the end of its log)."""
from __future__ import annotations

from pathlib import Path

LOG_TAIL_LINES = 25


class StackError(RuntimeError):
    """The local stack could not be started, stopped or found."""


class StackStartError(StackError):
    """A server exited or did not answer during start-up; the message ends with its log tail."""

    def __init__(self, summary: str, log_path: Path) -> None:
        self.summary = summary
        self.log_path = log_path
        self.log_tail = read_tail(log_path)
        super().__init__(f"{summary}\n--- last lines of {log_path} ---\n{self.log_tail}")


def read_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
