"""pipeline/storage.py's patient S3 filesystem, the one Ray Train's controller and workers write through."""
from __future__ import annotations

import pickle
import time

import pytest

from pipeline import storage


def test_patient_filesystem_pickles_its_retries_and_no_credentials(monkeypatch):
    """Ray Train pickles the storage filesystem to its controller: pyarrow's S3FileSystem would arrive there
    with the default 3 attempts (its retry strategy is not pickled) and with the secret key inside."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens on port 1
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret-value")
    payload = pickle.dumps(storage.patient_s3_filesystem("s3://bucket/ckpt", wait_s=40))
    assert b"planted-secret-value" not in payload
    arrived = pickle.loads(payload)
    assert arrived.handler.settings == ("bucket", "http://127.0.0.1:1", None, 40)


def test_patient_filesystem_waits_then_ends_with_one_line_naming_the_endpoint(monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    filesystem = storage.patient_s3_filesystem("s3://bucket/ckpt", wait_s=3)
    started = time.monotonic()
    with pytest.raises(storage.StorageUnavailable, match=r"storage s3://bucket/ckpt/snapshot.json \(S3 endpoint "
                       r"http://127.0.0.1:1\) unreachable for 3 s while trying to write it"):
        with filesystem.open_output_stream("bucket/ckpt/snapshot.json") as out:
            out.write(b"{}")
    assert time.monotonic() - started > 2  # backed off and retried, not failed at once
    assert "retrying for up to 3 s" in capsys.readouterr().err


def test_patient_filesystem_reads_writes_lists_and_deletes_on_a_real_server(local_s3, monkeypatch):
    for key, value in local_s3.env.items():
        monkeypatch.setenv(key, value)
    filesystem = pickle.loads(pickle.dumps(storage.patient_s3_filesystem(f"s3://{local_s3.bucket}/p", wait_s=10)))
    root = f"{local_s3.bucket}/patient"
    filesystem.create_dir(f"{root}/run", recursive=True)
    with filesystem.open_output_stream(f"{root}/run/a.json") as out:
        out.write(b'{"step": 1}')
    filesystem.copy_file(f"{root}/run/a.json", f"{root}/run/b.json")
    with filesystem.open_input_stream(f"{root}/run/b.json") as source:
        assert source.read() == b'{"step": 1}'
    assert storage.list_names(f"s3://{root}/run") == ["a.json", "b.json"]
    filesystem.delete_dir(f"{root}/run")
    assert not storage.exists(f"s3://{root}/run/a.json")
