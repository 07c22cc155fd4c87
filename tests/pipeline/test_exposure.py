"""Exposure: the local stack listens on loopback only and never uses well-known credentials."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from infra.local.state import CREDENTIALS_FILE, ENV_FILE, STATE_FILE, stack_credentials
from tests.sockets import is_loopback, listening_addresses


def process_group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    members.append(int(entry.name))
            except OSError:
                continue
    return members


@pytest.mark.slow
def test_stack_listens_on_loopback_only(local_stack):
    pids = [pid for proc in local_stack._procs.values() for pid in process_group_members(proc.pid)]
    listening = listening_addresses(pids)
    assert len(listening) >= 3  # S3, its internal servers, MLflow
    assert all(is_loopback(ip) for ip, _ in listening), listening
    for name in (STATE_FILE, ENV_FILE, CREDENTIALS_FILE):  # they hold the credentials
        assert stat.S_IMODE((local_stack.dir / name).stat().st_mode) == 0o600, name


def test_stack_credentials_are_random_per_stack_and_kept_per_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("CDRL_STACK_ACCESS_KEY", raising=False)
    monkeypatch.delenv("CDRL_STACK_SECRET_KEY", raising=False)
    first, second = stack_credentials(tmp_path / "a"), stack_credentials(tmp_path / "b")
    assert first != second and len(first[1]) >= 24
    assert "cdrl-local" not in (first + second)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / CREDENTIALS_FILE).write_text('{"access_key": "k", "secret_key": "s"}')
    assert stack_credentials(tmp_path / "c") == ("k", "s")
    monkeypatch.setenv("CDRL_STACK_ACCESS_KEY", "mine")
    monkeypatch.setenv("CDRL_STACK_SECRET_KEY", "also-mine")
    assert stack_credentials(tmp_path / "c") == ("mine", "also-mine")
