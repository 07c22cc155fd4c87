"""Session-scoped pytest fixtures for a real local S3 server and a real MLflow server.

Import the ones a module needs (or import them once in ``tests/conftest.py``)::

    from tests.stack_fixtures import local_s3, local_stack

Both run on free loopback ports in a temporary folder and stop at the end of the session. They are
independent stacks: a session that only asks for ``local_s3`` never pays for MLflow's start-up.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.local.stack import LocalStack


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """S3 only (SeaweedFS, ~1 s to start): ``s3_endpoint``, ``bucket``, ``env``."""
    with LocalStack(tmp_path_factory.mktemp("local_s3"), mlflow=False) as stack:
        yield stack


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """S3 plus an MLflow server with artifacts in ``s3://BUCKET/mlartifacts`` (~5-15 s to start):
    ``s3_endpoint``, ``bucket``, ``mlflow_uri``, ``env``."""
    with LocalStack(tmp_path_factory.mktemp("local_stack")) as stack:
        yield stack
