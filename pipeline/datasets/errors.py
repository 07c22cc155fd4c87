"""The dataset package's error type (unreachable storage is ``pipeline.storage.StorageError``)."""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset or its raw input is missing, malformed or inconsistent.

    The message is one line that names the file or URI and says what is wrong.
    """
