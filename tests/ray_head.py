"""A real Ray head node for the integration tests, started the way the README tells users to
(`ray start --head`), on loopback and free ports, in a Ray temp dir of its own; stopped by killing its own
processes (``ray stop`` would stop every Ray on the machine, the developer's own clusters included)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infra.local.network import free_port
from infra.local.processes import run_processes

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class RayHead:
    address: str  # GCS host:port, what a driver's RAY_ADDRESS names
    dashboard_url: str  # what `ray job submit --address` takes
    env: dict[str, str]  # the environment the head runs in (no AWS_/MLFLOW_ settings)

    @property
    def driver_env(self) -> dict[str, str]:
        """What a driver (`python pipeline/train.py`) needs in its environment to join this cluster: its
        address, and the token mode, so that the driver sends ~/.ray/auth_token."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token"}


@contextlib.contextmanager
def ray_head(ray_tmp: Path, num_cpus: int = 2) -> Iterator[RayHead]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_ADDRESS"))}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    env["RAY_TMPDIR"] = str(ray_tmp)
    # Ray 2.60 turns token authentication on for local clusters; the CLI needs the mode set to send the
    # token from ~/.ray/auth_token (created on first use). The README gives users the same export.
    env["RAY_AUTH_MODE"] = "token"
    # Keep a driver's idle task workers for its later fits instead of killing those above --num-cpus after 1 s
    # (Ray's default): each new worker costs ~1.5 CPU s of imports on 2 cores, and a driver that fits several
    # runs (the methods test, a Tune search) otherwise starts them again for every fit's Ray Data reads
    # (measured: 3 fits in one driver 44–52 s against 51–63 s, 69–84 CPU s against 81–102).
    env["RAY_idle_worker_killing_time_threshold_ms"] = "600000"
    env["RAY_num_workers_soft_limit"] = "10"
    token = subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], capture_output=True, env=env, timeout=60)
    assert token.returncode == 0, token.stderr
    gcs_port, dashboard_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    # Ray Train's PlacementGroupCleaner reaches the State API at this address (every worker inherits it from
    # the raylet) instead of scanning the machine for "the" Ray cluster, which fails when there are several.
    env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{dashboard_port}"
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
         f"--num-cpus={num_cpus}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         "--disable-usage-stats"],
        capture_output=True, text=True, env=env, timeout=180)
    assert start.returncode == 0, start.stderr
    try:
        yield RayHead(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dashboard_port}", env)
    finally:
        # Seen once: the head's dashboard and runtime-env agents outlived it without RAY_TMPDIR in their
        # environments; they had kept the API server address, which is this head's own too.
        markers = (f"RAY_TMPDIR={ray_tmp}", f"RAY_API_SERVER_ADDRESS={env['RAY_API_SERVER_ADDRESS']}")
        for pid in {pid for marker in markers for pid in run_processes(marker)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
