"""Local stack: a real S3 server (SeaweedFS ``weed mini``) and an MLflow tracking server.

Both servers listen on loopback only, keep their data and logs in one folder, and run in their
own process groups, so they outlive the command that started them and can be stopped as a whole.
The command line is ``python -m infra.local up|status|down`` (``infra/local/__main__.py``).

Python (tests use it through ``tests/stack_fixtures.py``)::

    with LocalStack(tmp_dir, mlflow=False) as stack:   # None ports: free ones are chosen
        os.environ.update(stack.env)

The S3 credentials are random for every stack (never a well-known default); set them with
``CDRL_STACK_ACCESS_KEY`` and ``CDRL_STACK_SECRET_KEY``. ``DIR/env.sh`` and ``DIR/state.json``, which hold
them, are readable by their owner only (``infra/local/state.py``).

Fault injection (tests): ``stop_server("s3" | "mlflow")`` and ``start_server(...)`` stop a server and start
it again on the same ports with the same data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from botocore.client import BaseClient

from infra.local.errors import StackError
from infra.local.network import (
    WEED_GRPC_OFFSET,
    ensure_free,
    free_port,
    free_port_pairs,
    http_ok,
    require_loopback,
    unix_socket_path,
)
from infra.local.processes import server_env, stop_process_groups, wait_until_ready
from infra.local.s3_server import REGION, create_bucket, find_weed, s3_answers, s3_client
from infra.local.state import (
    CREDENTIALS_FILE,
    ENV_FILE,
    STATE_FILE,
    ensure_not_running,
    export_lines,
    stack_credentials,
    write_private,
)

DEFAULT_DIR = ".stack"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_BUCKET = "cdrl"
DEFAULT_S3_PORT = 8333
DEFAULT_MLFLOW_PORT = 5000
MLFLOW_ARTIFACT_PREFIX = "mlartifacts"

S3_READY_TIMEOUT_S = 60.0
MLFLOW_READY_TIMEOUT_S = 240.0  # a loaded 2-core machine can take minutes

LOG_FILES = {"s3": "s3.log", "mlflow": "mlflow.log"}
WEED_COMPONENTS = ("master", "volume", "filer", "admin")  # each on an http port and a grpc port


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


def progress(message: str) -> None:
    """Progress goes to stderr so that stdout carries only the ``export`` lines."""
    print(message, file=sys.stderr, flush=True)
