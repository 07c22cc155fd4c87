"""Command line of the local stack (``infra/local/stack-up.sh`` and ``stack-down.sh`` wrap it)::

    python -m infra.local up [--dir .stack] [--s3-port 8333] [--mlflow-port 5000] [--bucket cdrl]
    python -m infra.local status [--dir .stack]
    python -m infra.local down [--dir .stack]

``up`` prints ``export ...`` lines on stdout (progress goes to stderr), so
``eval "$(python -m infra.local up)"`` configures the current shell; the same lines are kept in
``DIR/env.sh``. Run it from the repository root (the scripts do).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from infra.local.errors import StackError, StackStartError
from infra.local.stack import (
    DEFAULT_BUCKET,
    DEFAULT_DIR,
    DEFAULT_HOST,
    DEFAULT_MLFLOW_PORT,
    DEFAULT_S3_PORT,
    LocalStack,
    progress,
)
from infra.local.state import down_command, export_lines, probe_recorded, read_state, stop_recorded
from pipeline.cli import Parser


def cmd_up(args: argparse.Namespace) -> int:
    stack = LocalStack(
        args.dir,
        s3_port=args.s3_port,
        mlflow_port=args.mlflow_port,
        bucket=args.bucket,
        mlflow=not args.no_mlflow,
        host=args.host,
    )
    start = time.monotonic()
    try:
        stack.start()
    except StackStartError as error:
        print(error.log_tail, file=sys.stderr)
        progress(f"error: {error.summary} (full log: {error.log_path})")
        return 1
    progress(f"stack up in {time.monotonic() - start:.1f} s; stop it with: {down_command(stack.dir)}")
    print(export_lines(stack.env))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    dir = Path(args.dir).resolve()
    stopped = stop_recorded(dir)
    progress(f"stopped: {', '.join(stopped)}" if stopped else f"no running stack recorded in {dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    dir = Path(args.dir).resolve()
    state = read_state(dir)
    if state is None:
        print(f"no stack recorded in {dir}")
        return 1
    answers = probe_recorded(state)
    urls = {"s3": state["env"]["AWS_ENDPOINT_URL"], "mlflow": state["env"].get("MLFLOW_TRACKING_URI", "")}
    for name, ok in answers.items():
        print(f"{name:<7}{urls[name]:<28}{'answers' if ok else 'NOT answering'} (pid {state['pids'].get(name)})")
    return 0 if all(answers.values()) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(prog="python -m infra.local", description="Local stack: a real S3 server (SeaweedFS) and an MLflow tracking server, on loopback.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start S3 and MLflow, print export lines")
    up.add_argument("--s3-port", type=int, default=DEFAULT_S3_PORT, help="S3 port (default: %(default)s)")
    up.add_argument("--mlflow-port", type=int, default=DEFAULT_MLFLOW_PORT, help="MLflow port (default: %(default)s)")
    up.add_argument("--bucket", default=DEFAULT_BUCKET, help="bucket created at start (default: %(default)s)")
    up.add_argument("--host", default=DEFAULT_HOST, help="loopback address to bind")
    up.add_argument("--no-mlflow", action="store_true", help="start only the S3 server")
    up.set_defaults(run=cmd_up)
    commands.add_parser("down", help="stop the servers").set_defaults(run=cmd_down)
    commands.add_parser("status", help="say whether each server answers").set_defaults(run=cmd_status)
    for command in commands.choices.values():
        command.add_argument("--dir", default=DEFAULT_DIR, help="stack folder (data, logs, state)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return args.run(args)
    except StackError as error:
        progress(f"error: {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
