"""Write a :class:`Source` as deterministic Parquet shards, then publish it with its manifest (last)."""
from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import storage
from pipeline.datasets.checks import check_finite, check_labels, check_range
from pipeline.datasets.content import ContentDigest
from pipeline.datasets.errors import DatasetError
from pipeline.datasets.manifest import (
    DATA_COLUMN,
    LABEL_COLUMN,
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    content_version,
    data_type,
    shard_name,
    type_name,
)
from pipeline.datasets.sources import Chunk, Source

TARGET_SHARD_BYTES = 128 * 1024 * 1024
ROW_GROUP_ROWS = 8192
# Parquet stores uint8 as 4-byte INT32; splitting the byte streams lets zstd drop the zero bytes: image
# shards shrink by ~30% and decode ~3x faster than PLAIN. Readers need pyarrow >= 17 for INT32 streams.
DATA_ENCODING = {f"{DATA_COLUMN}.list.element": "BYTE_STREAM_SPLIT"}


def arrow_schema(source: Source) -> pa.Schema:
    """``data`` fixed-size list, then ``label`` int64 if labelled, then one int8 column per attribute."""
    columns = [pa.field(DATA_COLUMN, data_type(source.dtype, source.item_shape), nullable=False)]
    if source.has_labels:
        columns.append(pa.field(LABEL_COLUMN, pa.int64(), nullable=False))
    columns += [pa.field(name, pa.int8(), nullable=False) for name in source.attribute_names]
    return pa.schema(columns)


def default_num_shards(source: Source) -> int:
    """About TARGET_SHARD_BYTES of raw values per shard, at least one."""
    item_bytes = math.prod(source.item_shape) * np.dtype(source.dtype).itemsize
    return max(1, math.ceil(source.num_rows * item_bytes / TARGET_SHARD_BYTES))


def write_dataset(source: Source, out_uri: str, num_shards: int | None = None) -> Manifest:
    """Write ``source`` under ``out_uri`` (local folder or s3://) and return the published manifest.

    Any existing manifest is removed first, the shards are written, and the new manifest goes last, so
    readers see either no dataset or a complete one. Shards of an earlier write not named by the new
    manifest are deleted afterwards.
    """
    if source.num_rows == 0:
        raise DatasetError(f"{source.origin}: no rows to write")
    num_shards = num_shards or default_num_shards(source)
    if not 1 <= num_shards <= source.num_rows:
        raise DatasetError(f"{out_uri}: --shards must be between 1 and the {source.num_rows} rows, got {num_shards}")
    manifest_uri = storage.join(out_uri, MANIFEST_NAME)
    storage.delete(manifest_uri)
    schema = arrow_schema(source)
    shards, content_sha256, measured_range = _write_shards(source, out_uri, schema, num_shards)
    draft = Manifest(
        dataset=source.name,
        version="",
        num_rows=source.num_rows,
        item_shape=source.item_shape,
        dtype=source.dtype,
        value_range=source.value_range or measured_range,
        transform=source.transform,
        schema={field.name: type_name(field.type) for field in schema},
        has_labels=source.has_labels,
        num_classes=source.num_classes,
        label_names=source.label_names,
        attribute_names=source.attribute_names,
        content_sha256=content_sha256,
        shards=shards,
        provenance=source.provenance,
    )
    manifest = replace(draft, version=content_version(draft))
    manifest.check_consistency(manifest_uri)
    storage.write_bytes(manifest_uri, manifest.to_json().encode())
    _delete_stale_shards(out_uri, {shard.path for shard in shards})
    return manifest


def _write_shards(
    source: Source, out_uri: str, schema: pa.Schema, num_shards: int
) -> tuple[list[ShardInfo], dict[str, str], tuple[float, float]]:
    """Stream the source's rows into shards: (shard infos, per-column content hashes, min/max of float data)."""
    sink = _ShardSink(out_uri, schema, [_shard_rows(source.num_rows, num_shards, i) for i in range(num_shards)])
    digest = ContentDigest(schema.names)
    low, high = math.inf, -math.inf
    with tqdm(total=source.num_rows, unit="rows", desc=f"{source.name} → {out_uri}") as progress:
        for chunk in source.chunks():
            _check_chunk(chunk, source)
            table = _chunk_table(chunk, schema)
            digest.update(table)
            if source.value_range is None and chunk.data.size:
                low, high = min(low, float(chunk.data.min())), max(high, float(chunk.data.max()))
            sink.write(table)
            progress.update(len(chunk.data))
    return sink.close(), digest.hexdigests(), (low, high)


class _ShardSink:
    """Takes consecutive rows and cuts them into shards of preset sizes, uploading each one when full."""

    def __init__(self, out_uri: str, schema: pa.Schema, shard_rows: list[int]) -> None:
        self._out_uri, self._schema, self._shard_rows = out_uri, schema, shard_rows
        self._written: list[ShardInfo] = []
        self._buffer: pa.BufferOutputStream | None = None
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_shard = 0

    def write(self, table: pa.Table) -> None:
        """Append ``table``'s rows, rolling over to the next shard at each boundary."""
        offset = 0
        while offset < table.num_rows:
            if len(self._written) == len(self._shard_rows):
                raise DatasetError(f"{self._out_uri}: the source yielded more rows than it announced")
            if self._writer is None:
                self._buffer = pa.BufferOutputStream()
                self._writer = pq.ParquetWriter(
                    self._buffer, self._schema, compression="zstd", use_dictionary=False, write_statistics=False,
                    column_encoding=DATA_ENCODING,
                )
            take = min(table.num_rows - offset, self._shard_rows[len(self._written)] - self._rows_in_shard)
            self._writer.write_table(table.slice(offset, take), row_group_size=ROW_GROUP_ROWS)
            offset += take
            self._rows_in_shard += take
            if self._rows_in_shard == self._shard_rows[len(self._written)]:
                self._publish_shard()

    def close(self) -> list[ShardInfo]:
        """The written shards; DatasetError if the source yielded fewer rows than it announced."""
        if len(self._written) != len(self._shard_rows):
            rows = sum(shard.num_rows for shard in self._written) + self._rows_in_shard
            announced = sum(self._shard_rows)
            raise DatasetError(f"{self._out_uri}: the source yielded {rows} rows, fewer than the {announced} announced")
        return self._written

    def _publish_shard(self) -> None:
        """Finish the current shard's Parquet file, hash it and store it."""
        self._writer.close()
        payload = self._buffer.getvalue().to_pybytes()
        name = shard_name(len(self._written), len(self._shard_rows))
        storage.write_bytes(storage.join(self._out_uri, name), payload)
        self._written.append(ShardInfo(name, self._rows_in_shard, hashlib.sha256(payload).hexdigest()))
        self._buffer, self._writer, self._rows_in_shard = None, None, 0


def _shard_rows(num_rows: int, num_shards: int, index: int) -> int:
    """Rows of shard ``index`` when ``num_rows`` are split into ``num_shards`` near-equal consecutive runs."""
    return (index + 1) * num_rows // num_shards - index * num_rows // num_shards


def _check_chunk(chunk: Chunk, source: Source) -> None:
    """Raise DatasetError when a chunk's shape, dtype, values or labels break the source's promises."""
    where = source.origin
    item_size = math.prod(source.item_shape)
    if chunk.data.dtype != np.dtype(source.dtype) or chunk.data.ndim != 2 or chunk.data.shape[1] != item_size:
        raise DatasetError(
            f"{where}: rows must be {source.dtype} (n, {item_size}), got {chunk.data.dtype} {chunk.data.shape}"
        )
    check_finite(chunk.data, where)
    if source.value_range is not None:
        check_range(chunk.data, source.value_range, where)
    if source.has_labels:
        check_labels(chunk.labels, source.num_classes, where)


def _chunk_table(chunk: Chunk, schema: pa.Schema) -> pa.Table:
    """A chunk as an Arrow table with ``schema``."""
    item_size = schema.field(DATA_COLUMN).type.list_size
    arrays = [pa.FixedSizeListArray.from_arrays(pa.array(chunk.data.reshape(-1)), item_size)]
    if LABEL_COLUMN in schema.names:
        arrays.append(pa.array(chunk.labels, type=pa.int64()))
    attribute_names = [name for name in schema.names if name not in (DATA_COLUMN, LABEL_COLUMN)]
    arrays += [pa.array(chunk.attributes[name], type=pa.int8()) for name in attribute_names]
    return pa.Table.from_arrays(arrays, schema=schema)


def _delete_stale_shards(out_uri: str, keep: set[str]) -> None:
    """Remove shard files of earlier writes that the new manifest does not name."""
    for name in storage.list_names(out_uri):
        if name.startswith("shard-") and name.endswith(".parquet") and name not in keep:
            storage.delete(storage.join(out_uri, name))
