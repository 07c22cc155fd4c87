"""The manifest: the one file that publishes a dataset and describes its Parquet shards.

A dataset folder (local or ``s3://``) holds ``shard-00000-of-000NN.parquet`` files and ``manifest.json``.
The manifest is written last, so a folder without one is an unfinished or abandoned write.
Shards have a ``data`` column of ``fixed_size_list<uint8 | float32>`` (one flattened item per row),
an optional int64 ``label`` column and optional int8 attribute columns (CelebA-style, values ±1).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from pipeline.datasets.errors import DatasetError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATA_COLUMN = "data"
LABEL_COLUMN = "label"
DTYPES = {"uint8": pa.uint8(), "float32": pa.float32()}


def shard_name(index: int, num_shards: int) -> str:
    """``shard-00003-of-00008.parquet``."""
    return f"shard-{index:05d}-of-{num_shards:05d}.parquet"


def data_type(dtype: str, item_shape: tuple[int, ...]) -> pa.DataType:
    """Arrow type of the ``data`` column: a fixed-size list holding one flattened item."""
    return pa.list_(DTYPES[dtype], math.prod(item_shape))


def type_name(arrow_type: pa.DataType) -> str:
    """Arrow type as written in the manifest's schema, e.g. ``fixed_size_list<uint8>[3072]``.

    The list's child field name is left out: Parquet round trips rename it (``item`` → ``element``).
    """
    if isinstance(arrow_type, pa.FixedSizeListType):
        return f"fixed_size_list<{arrow_type.value_type}>[{arrow_type.list_size}]"
    return str(arrow_type)


@dataclass(frozen=True)
class ModelTransform:
    """Stored value → model space: ``x / divide_by + add`` in float32 (uint8 images: x / 127.5 - 1)."""

    divide_by: float = 1.0
    add: float = 0.0

    def apply(self, values: np.ndarray) -> np.ndarray:
        """float32 model-space values of stored ``values``."""
        out = values.astype(np.float32)
        if self.divide_by != 1.0:
            out /= np.float32(self.divide_by)
        if self.add != 0.0:
            out += np.float32(self.add)
        return out


@dataclass(frozen=True)
class ShardInfo:
    """One shard: its file name relative to the dataset folder, its row count and the sha256 of its bytes."""

    path: str
    num_rows: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """Everything a reader needs to trust and decode a dataset (the parsed ``manifest.json``)."""

    dataset: str
    version: str
    num_rows: int
    item_shape: tuple[int, ...]
    dtype: str
    value_range: tuple[float, float]
    transform: ModelTransform
    schema: dict[str, str]
    has_labels: bool
    num_classes: int | None
    label_names: list[str] | None
    attribute_names: list[str]
    content_sha256: dict[str, str]
    shards: list[ShardInfo]
    provenance: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # Feature statistics of this version, per extractor: {"digits": "stats/digits.npz"} (pipeline/reference_stats.py).
    # Not part of the version id: they are derived from the data, added after it was published.
    reference_stats: dict[str, str] = field(default_factory=dict)

    @property
    def model_range(self) -> tuple[float, float]:
        """The value range in model space (``[-1, 1]`` for uint8 images)."""
        low, high = self.transform.apply(np.asarray(self.value_range, dtype=np.float64))
        return float(low), float(high)

    def to_json(self) -> str:
        """The manifest as indented JSON (deterministic: same manifest, same bytes)."""
        raw = {
            "format_version": self.format_version,
            "dataset": self.dataset,
            "version": self.version,
            "num_rows": self.num_rows,
            "item_shape": list(self.item_shape),
            "dtype": self.dtype,
            "value_range": list(self.value_range),
            "to_model_space": {**asdict(self.transform), "model_range": list(self.model_range)},
            "schema": self.schema,
            "has_labels": self.has_labels,
            "num_classes": self.num_classes,
            "label_names": self.label_names,
            "attribute_names": self.attribute_names,
            "content_sha256": self.content_sha256,
            "shards": [asdict(shard) for shard in self.shards],
            "provenance": self.provenance,
        }
        if self.reference_stats:
            raw["reference_stats"] = dict(sorted(self.reference_stats.items()))
        return json.dumps(raw, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> Manifest:
        """Parse and check a manifest; ``where`` (its URI) prefixes every DatasetError."""
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DatasetError(f"{where}: unreadable manifest, not valid JSON ({error})") from error
        if not isinstance(raw, dict):
            raise DatasetError(f"{where}: unreadable manifest, expected a JSON object")
        fields = _Fields(raw, where)
        format_version = fields.get("format_version", int)
        if format_version != FORMAT_VERSION:
            raise DatasetError(f"{where}: unsupported format_version {format_version}; expected {FORMAT_VERSION}")
        transform = fields.get("to_model_space", dict)
        try:
            shards = [
                ShardInfo(str(entry["path"]), int(entry["num_rows"]), str(entry["sha256"]))
                for entry in fields.get("shards", list)
            ]
            manifest = cls(
                dataset=fields.get("dataset", str),
                version=fields.get("version", str),
                num_rows=fields.get("num_rows", int),
                item_shape=tuple(int(size) for size in fields.get("item_shape", list)),
                dtype=fields.get("dtype", str),
                value_range=tuple(float(bound) for bound in fields.get("value_range", list)),
                transform=ModelTransform(float(transform["divide_by"]), float(transform["add"])),
                schema={str(name): str(kind) for name, kind in fields.get("schema", dict).items()},
                has_labels=fields.get("has_labels", bool),
                num_classes=fields.get("num_classes", (int, type(None))),
                label_names=fields.get("label_names", (list, type(None))),
                attribute_names=fields.get("attribute_names", list),
                content_sha256=fields.get("content_sha256", dict),
                shards=shards,
                provenance=fields.get("provenance", dict),
                reference_stats={str(k): str(v) for k, v in raw.get("reference_stats", {}).items()},
            )
        except DatasetError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"{where}: malformed manifest entry ({type(error).__name__}: {error})") from error
        manifest.check_consistency(where)
        return manifest

    def check_consistency(self, where: str) -> None:
        """Raise DatasetError when the manifest contradicts itself or describes an empty dataset."""
        if self.dtype not in DTYPES:
            raise DatasetError(f"{where}: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not self.item_shape or min(self.item_shape) < 1:
            raise DatasetError(f"{where}: item_shape {list(self.item_shape)} must be non-empty and positive")
        expected = type_name(data_type(self.dtype, self.item_shape))
        if self.schema.get(DATA_COLUMN) != expected:
            raise DatasetError(
                f"{where}: schema says column {DATA_COLUMN} is {self.schema.get(DATA_COLUMN)}, but dtype {self.dtype} "
                f"and item_shape {list(self.item_shape)} need {expected}"
            )
        if self.has_labels != (LABEL_COLUMN in self.schema):
            raise DatasetError(f"{where}: has_labels is {self.has_labels} but the schema {list(self.schema)} disagrees")
        low, high = self.value_range if len(self.value_range) == 2 else (math.nan, math.nan)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise DatasetError(f"{where}: value_range {list(self.value_range)} must be two finite numbers, low <= high")
        if self.num_rows == 0:
            raise DatasetError(f"{where}: dataset is empty (num_rows is 0)")
        odd_paths = [shard.path for shard in self.shards if not re.fullmatch(r"[\w.-]+\.parquet", shard.path)]
        if odd_paths:
            raise DatasetError(f"{where}: shard path {odd_paths[0]!r} is not a .parquet file name inside the dataset")
        shard_rows = sum(shard.num_rows for shard in self.shards)
        if shard_rows != self.num_rows:
            raise DatasetError(f"{where}: num_rows is {self.num_rows} but the shards list {shard_rows} rows")
        if self.version != content_version(self):
            raise DatasetError(f"{where}: version {self.version} does not match the manifest's contents (hand-edited?)")


def content_version(manifest: Manifest) -> str:
    """The dataset version id: sha256 over what the data means, independent of how it is sharded or encoded.

    It covers the per-column content hashes (sha256 of each column's values, in row order, as
    little-endian bytes) plus shape, dtype, value range, transform, schema and label names, so the same
    inputs give the same id, and any change of values or of their meaning gives a new one.
    """
    described = {
        "format_version": manifest.format_version,
        "item_shape": list(manifest.item_shape),
        "dtype": manifest.dtype,
        "value_range": [float(bound) for bound in manifest.value_range],
        "to_model_space": {"divide_by": float(manifest.transform.divide_by), "add": float(manifest.transform.add)},
        "schema": manifest.schema,
        "num_classes": manifest.num_classes,
        "label_names": manifest.label_names,
        "content_sha256": manifest.content_sha256,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


class _Fields:
    """Typed access to a parsed manifest's keys, with one-line errors naming the manifest."""

    def __init__(self, raw: dict, where: str) -> None:
        self._raw, self._where = raw, where

    def get(self, key: str, kind: type | tuple[type, ...]):
        """``raw[key]`` after checking that it exists and has the expected JSON type."""
        if key not in self._raw:
            raise DatasetError(f"{self._where}: manifest has no {key!r} field")
        value = self._raw[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise DatasetError(f"{self._where}: manifest field {key!r} has the wrong type ({type(value).__name__})")
        return value
