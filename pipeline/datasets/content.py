"""Column values of a shard table, and the per-column content hash that the dataset version is built from."""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from pipeline.datasets.manifest import DATA_COLUMN


def column_values(table: pa.Table, name: str) -> np.ndarray:
    """Column ``name`` as numpy: ``data`` as (n, item_size), other columns as (n,)."""
    column = table.column(name).combine_chunks()
    if name == DATA_COLUMN:
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    return column.to_numpy(zero_copy_only=False)


class ContentDigest:
    """sha256 per column over its values in row order as little-endian bytes: what the data is, not its encoding."""

    def __init__(self, names: list[str]) -> None:
        self._digests = {name: hashlib.sha256() for name in names}

    def update(self, table: pa.Table) -> None:
        """Feed the next rows (a table with at least the digested columns)."""
        for name, digest in self._digests.items():
            values = column_values(table, name)
            digest.update(np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")))

    def hexdigests(self) -> dict[str, str]:
        """Column name → hex sha256 of everything fed so far."""
        return {name: digest.hexdigest() for name, digest in self._digests.items()}
