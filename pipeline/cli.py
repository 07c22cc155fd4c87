"""Shared command-line plumbing for the entry points: repo on sys.path, one-line errors, JSON output."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def run_main(main: Callable[[], int | None], user_errors: tuple[type[BaseException], ...]) -> None:
    """Run ``main``; a user error (bad config, bad data, unreachable service) exits 2 with one line."""
    try:
        sys.exit(main() or 0)
    except user_errors as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
