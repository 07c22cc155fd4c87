"""Loopback addresses and free ports for the local stack's servers, and an HTTP readiness probe."""
from __future__ import annotations

import ipaddress
import random
import socket
import urllib.request
from pathlib import Path

from infra.local.errors import StackError

# weed mini serves each component on an http port and a grpc port. Its admin worker dials
# "admin http port + 10000" whatever -admin.port.grpc says, so every grpc port keeps that offset.
WEED_GRPC_OFFSET = 10000
PORT_RANGE = (20000, 55000)
MAX_UNIX_SOCKET_PATH = 100


def require_loopback(host: str) -> str:
    """Return ``host`` if it is a loopback IP address; the stack never listens beyond this machine."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise StackError(f"host must be a loopback IP address such as 127.0.0.1, got {host!r}")


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


def ensure_free(host: str, port: int, what: str, flag: str) -> None:
    """Raise a StackError naming ``flag`` if ``port`` is taken."""
    if not port_is_free(host, port):
        raise StackError(f"port {port} ({what}) on {host} is already in use; choose another with {flag}")


def http_ok(url: str) -> bool:
    """Whether ``url`` answers HTTP 200 within two seconds."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
