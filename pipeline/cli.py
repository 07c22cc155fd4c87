"""Shared command-line plumbing for the entry points: repo on sys.path, one-line errors, JSON output."""
from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


class Parser(argparse.ArgumentParser):
    """argparse with the project's error convention: one ``error: …`` line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def run_main(main: Callable[[], int | None], user_errors: tuple[type[BaseException], ...],
             run_failures: tuple[type[BaseException], ...] = ()) -> None:
    """Run ``main``; a user error (bad config, bad data, unreachable service) exits 2 with one line; a run
    that was stopped for a reason it names (divergence, storage gone for good) exits 1 with one line."""
    try:
        sys.exit(main() or 0)
    except user_errors as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        exit_after_error(2)
    except run_failures as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        exit_after_error(1)


def exit_after_error(code: int) -> NoReturn:
    """Exit with ``code`` once Python's own clean-up (atexit: Ray shutdown, MLflow, logging) has run, skipping the
    native teardown after it: pyarrow's thread pools can abort the process there ("terminate called without an
    active exception", apache/arrow#34314), which would turn the promised exit code into -6 (SIGABRT)."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
