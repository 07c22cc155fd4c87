"""What a stack leaves in its folder: credentials, the state file (ports, pids, env) and ``env.sh``, all
readable by their owner only; and acting on a recorded stack (is it running, stop it, probe it)."""
from __future__ import annotations

import json
import os
import secrets
import shlex
from pathlib import Path

from infra.local.errors import StackError
from infra.local.network import http_ok
from infra.local.processes import is_stack_process, pid_alive, stop_process_groups
from infra.local.s3_server import s3_answers, s3_client

STATE_FILE = "state.json"
CREDENTIALS_FILE = "credentials.json"
ENV_FILE = "env.sh"
ACCESS_KEY_ENV = "CDRL_STACK_ACCESS_KEY"
SECRET_KEY_ENV = "CDRL_STACK_SECRET_KEY"


def stack_credentials(dir: Path) -> tuple[str, str]:
    """(access key, secret key): from the environment, else those this stack folder was first started with,
    else new random ones, so a stack keeps its credentials across down/up and no two stacks share them."""
    if os.environ.get(ACCESS_KEY_ENV) and os.environ.get(SECRET_KEY_ENV):
        return os.environ[ACCESS_KEY_ENV], os.environ[SECRET_KEY_ENV]
    saved = dir / CREDENTIALS_FILE
    if saved.is_file():
        values = json.loads(saved.read_text())
        return values["access_key"], values["secret_key"]
    return f"cdrl-{secrets.token_hex(6)}", secrets.token_urlsafe(24)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds the stack's credentials)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def export_lines(env: dict[str, str]) -> str:
    """``export K=V`` lines for a POSIX shell."""
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in env.items())


def read_state(dir: Path) -> dict | None:
    """The state file a started stack wrote into ``dir``, or None."""
    path = dir / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def running_pids(dir: Path, state: dict) -> dict[str, int]:
    """The recorded servers of ``dir`` that are still running."""
    return {name: pid for name, pid in state["pids"].items() if is_stack_process(pid, dir)}


def ensure_not_running(dir: Path) -> None:
    """Refuse to start a second stack on the same folder."""
    state = read_state(dir)
    if state and running_pids(dir, state):
        raise StackError(f"a stack is already running from {dir}; stop it with: {down_command(dir)}")


def down_command(dir: Path) -> str:
    """The command that stops the stack in ``dir``."""
    return f"python -m infra.local down --dir {shlex.quote(str(dir))}"


def stop_recorded(dir: Path) -> list[str]:
    """Stop the servers recorded in ``dir``; return the names of those that were running."""
    state = read_state(dir)
    if state is None:
        return []
    alive = running_pids(dir, state)
    stop_process_groups({pid: (lambda p=pid: pid_alive(p)) for pid in alive.values()})
    (dir / STATE_FILE).unlink()
    return sorted(alive)


def probe_recorded(state: dict) -> dict[str, bool]:
    """Whether each recorded server answers: S3 an authenticated ListBuckets, MLflow ``/health``."""
    env = state["env"]
    client = s3_client(env["AWS_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    answers = {"s3": s3_answers(client)}
    if "MLFLOW_TRACKING_URI" in env:
        answers["mlflow"] = http_ok(f"{env['MLFLOW_TRACKING_URI']}/health")
    return answers
