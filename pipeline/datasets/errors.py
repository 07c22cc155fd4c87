"""The two error types of the dataset package: bad data versus unreachable storage."""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset or its raw input is missing, malformed or inconsistent.

    The message is one line that names the file or URI and says what is wrong.
    """


class StorageError(OSError):
    """Storage (a local folder or an S3 endpoint) could not be reached or written; names the URI."""


def one_line(error: BaseException) -> str:
    """An exception's text collapsed onto one line (pyarrow and AWS messages can span several)."""
    return " ".join(str(error).split())
