"""Helpers that damage a prepared dataset in controlled ways, for the bad-input tests."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def data_table(values: np.ndarray, labels: np.ndarray | None = None) -> pa.Table:
    """A shard table with a fixed-size-list ``data`` column (and ``label``) holding ``values`` row by row."""
    columns = {"data": pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])}
    if labels is not None:
        columns["label"] = pa.array(labels, type=pa.int64())
    return pa.table(columns)


def edit_manifest(dataset: Path, edit) -> None:
    """Apply ``edit`` to the parsed manifest.json and write it back."""
    raw = json.loads((dataset / "manifest.json").read_text())
    edit(raw)
    (dataset / "manifest.json").write_text(json.dumps(raw))


def replace_shard(dataset: Path, table: pa.Table, index: int = 0) -> str:
    """Swap shard ``index`` for ``table``, updating its sha256 and row counts so the hash check passes."""
    name = json.loads((dataset / "manifest.json").read_text())["shards"][index]["path"]
    pq.write_table(table, dataset / name)

    def edit(raw: dict) -> None:
        shard = raw["shards"][index]
        raw["num_rows"] += table.num_rows - shard["num_rows"]
        shard.update(num_rows=table.num_rows, sha256=hashlib.sha256((dataset / name).read_bytes()).hexdigest())

    edit_manifest(dataset, edit)
    return name
