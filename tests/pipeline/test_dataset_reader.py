"""The dataset reader: exact round trips, and one clear DatasetError for every way a dataset can be bad."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.datasets import (
    DatasetError,
    load_manifest,
    read_arrays,
    to_model_space,
    validate_dataset,
)
from pipeline.datasets.manifest import ModelTransform
from pipeline.datasets.sources import UINT8_TO_MODEL, in_memory_source
from pipeline.datasets.writer import write_dataset
from pipeline.storage import StorageError
from tests.pipeline.dataset_edits import data_table, edit_manifest, replace_shard

IMAGE_SHAPE = (3, 4, 4)


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 10-row uint8 image dataset with labels in 2 shards, and its stored rows and labels."""
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, size=(10, 48), dtype=np.uint8)
    labels = rng.integers(0, 3, size=10)
    source = in_memory_source(
        rows, IMAGE_SHAPE, labels, UINT8_TO_MODEL, (0.0, 255.0), name="tiny", origin="test", provenance={}
    )
    write_dataset(source, str(tmp_path / "images"), num_shards=2)
    return tmp_path / "images", rows, labels


@pytest.fixture
def points(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 6-row float32 2-D point dataset without labels in one shard, and its points."""
    values = np.random.default_rng(1).normal(size=(6, 2)).astype(np.float32)
    source = in_memory_source(values, (2,), None, ModelTransform(), None, name="pts", origin="test", provenance={})
    write_dataset(source, str(tmp_path / "points"), num_shards=1)
    return tmp_path / "points", values


def test_round_trip_is_exact(images, points) -> None:
    folder, rows, labels = images
    x, read_labels = read_arrays(str(folder))
    expected = rows.reshape(-1, *IMAGE_SHAPE).astype(np.float32) / np.float32(127.5) - np.float32(1)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(read_labels, labels)
    manifest = validate_dataset(str(folder))
    assert (manifest.item_shape, manifest.dtype, manifest.num_rows) == (IMAGE_SHAPE, "uint8", 10)
    assert manifest.has_labels and manifest.num_classes == 3
    assert [shard.num_rows for shard in manifest.shards] == [5, 5] and len(manifest.version) == 64

    folder, values = points
    x, read_labels = read_arrays(str(folder))
    np.testing.assert_array_equal(x, values)
    assert read_labels is None and load_manifest(str(folder)).value_range == (values.min(), values.max())


def test_to_model_space_takes_ray_object_arrays_and_plain_arrays(images) -> None:
    folder, rows, _ = images
    manifest = load_manifest(str(folder))
    as_objects = np.empty(3, dtype=object)
    as_objects[:] = [row for row in rows[:3]]
    expected = rows[:3].reshape(3, *IMAGE_SHAPE).astype(np.float32) / np.float32(127.5) - np.float32(1)
    np.testing.assert_array_equal(to_model_space(as_objects, manifest), expected)
    np.testing.assert_array_equal(to_model_space(rows[:3], manifest), expected)
    assert to_model_space(np.empty(0, dtype=object), manifest).shape == (0, *IMAGE_SHAPE)
    with pytest.raises(DatasetError, match="does not hold uint8 items"):
        to_model_space(rows[:3, :10], manifest)


def test_shards_without_manifest_are_never_trusted(images, tmp_path: Path) -> None:
    folder, _, _ = images
    (folder / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="no manifest; 2 shard files .* never published"):
        validate_dataset(str(folder))
    with pytest.raises(DatasetError, match="no manifest; not a prepared dataset"):
        read_arrays(str(tmp_path / "nothing-here"))


def test_missing_shard(images) -> None:
    folder, _, _ = images
    (folder / "shard-00001-of-00002.parquet").unlink()
    with pytest.raises(DatasetError, match="shard-00001-of-00002.parquet: shard listed in the manifest is missing"):
        validate_dataset(str(folder))


def test_flipped_bytes_fail_the_sha256_check(images) -> None:
    folder, _, _ = images
    shard = folder / "shard-00000-of-00002.parquet"
    payload = bytearray(shard.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    shard.write_bytes(bytes(payload))
    with pytest.raises(DatasetError, match="shard-00000-of-00002.parquet: sha256 .* does not match"):
        read_arrays(str(folder))


def test_truncated_shard_without_hash_check_names_the_shard(images) -> None:
    folder, _, _ = images
    shard = folder / "shard-00001-of-00002.parquet"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DatasetError, match="shard-00001-of-00002.parquet: not a readable Parquet file"):
        validate_dataset(str(folder), check_hashes=False)


def test_manifest_hash_that_does_not_match_the_shard(images) -> None:
    folder, _, _ = images
    edit_manifest(folder, lambda raw: raw["shards"][1].update(sha256="0" * 64))
    with pytest.raises(DatasetError, match="shard-00001-of-00002.parquet: sha256 .* not match the manifest's 0000"):
        validate_dataset(str(folder))


def test_wrong_item_shape(images) -> None:
    folder, rows, labels = images
    replace_shard(folder, data_table(rows[:5, :12], labels[:5]))
    expected = r"column data is fixed_size_list<uint8>\[12\] in the shard .*item_shape \[3, 4, 4\]"
    with pytest.raises(DatasetError, match=expected):
        validate_dataset(str(folder))


def test_wrong_dtype(images) -> None:
    folder, rows, labels = images
    replace_shard(folder, data_table(rows[:5].astype(np.float32), labels[:5]))
    with pytest.raises(DatasetError, match=r"column data is fixed_size_list<float>\[48\] in the shard but .*<uint8>"):
        validate_dataset(str(folder))


def test_missing_label_column(images) -> None:
    folder, rows, _ = images
    replace_shard(folder, data_table(rows[:5]))
    with pytest.raises(DatasetError, match="column label is missing in the shard but int64 in the manifest"):
        validate_dataset(str(folder))


def test_nan_values(points) -> None:
    folder, values = points
    broken = values.copy()
    broken[2, 1] = np.nan
    replace_shard(folder, data_table(broken))
    with pytest.raises(DatasetError, match="shard-00000-of-00001.parquet: 1 NaN/inf values"):
        validate_dataset(str(folder))


def test_values_outside_the_manifest_range(points) -> None:
    folder, values = points
    broken = values.copy()
    broken[0, 0] = 100.0
    replace_shard(folder, data_table(broken))
    with pytest.raises(DatasetError, match=r"values span \[.*, 100.0\], outside the value range"):
        validate_dataset(str(folder))


def test_labels_outside_num_classes(images) -> None:
    folder, rows, labels = images
    replace_shard(folder, data_table(rows[:5], np.full(5, 7)))
    with pytest.raises(DatasetError, match="label 7 is not below num_classes 3"):
        validate_dataset(str(folder))


def test_changed_content_with_updated_file_hash_fails_the_content_check(points) -> None:
    folder, values = points
    replace_shard(folder, data_table(values[::-1].copy()))
    with pytest.raises(DatasetError, match="shard contents do not match its content_sha256"):
        validate_dataset(str(folder))


def test_empty_dataset(points) -> None:
    folder, values = points
    replace_shard(folder, data_table(values[:0]))
    with pytest.raises(DatasetError, match="dataset is empty"):
        validate_dataset(str(folder))


def test_unreadable_manifest_json(images) -> None:
    folder, _, _ = images
    (folder / "manifest.json").write_text('{"format_version": 1, "shards": [')
    with pytest.raises(DatasetError, match="manifest.json: unreadable manifest, not valid JSON"):
        load_manifest(str(folder))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda raw: raw.pop("dtype"), "manifest has no 'dtype' field"),
        (lambda raw: raw.update(format_version=99), "unsupported format_version 99"),
        (lambda raw: raw.update(item_shape=[2, 4, 4]), r"item_shape \[2, 4, 4\] need fixed_size_list<uint8>\[32\]"),
        (lambda raw: raw.update(num_rows=11), "num_rows is 11 but the shards list 10 rows"),
        (lambda raw: raw["shards"][0].update(path="../elsewhere.parquet"), "not a .parquet file name inside"),
        (lambda raw: raw.update(value_range=[0, 128]), "does not match the manifest's contents"),
    ],
)
def test_inconsistent_manifest(images, edit, expected: str) -> None:
    folder, _, _ = images
    edit_manifest(folder, edit)
    with pytest.raises(DatasetError, match=expected):
        load_manifest(str(folder))


def test_unreachable_s3_endpoint_fails_fast_naming_the_uri(monkeypatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    started = time.monotonic()
    expected = rf"s3://no-bucket/cifar10/manifest.json \(S3 endpoint http://127.0.0.1:{port}\)"
    with pytest.raises(StorageError, match=expected):
        load_manifest("s3://no-bucket/cifar10")
    assert time.monotonic() - started < 15
