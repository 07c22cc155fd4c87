"""prepare_data on tiny inputs fabricated in each dataset's true on-disk format, read back exactly."""
from __future__ import annotations

import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.datasets import load_manifest, read_arrays, validate_dataset
from pipeline.datasets.image_folder import ATTRIBUTE_FILE
from pipeline.prepare_data import main

REPO_ROOT = Path(__file__).resolve().parents[2]
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def prepare(*args: str) -> None:
    """Run prepare_data in this process and require success."""
    assert main(list(args)) == 0


def to_model(rows: np.ndarray) -> np.ndarray:
    """Expected model-space images for uint8 (N, 3072) rows."""
    return rows.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


# ---- fabricated raw inputs -------------------------------------------------------------------------------


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    """One CIFAR-10 python batch as the official files have it: a protocol-2 pickle with bytes keys."""
    batch = {b"batch_label": path.name.encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    payload = pickle.dumps(batch, protocol=2)
    # The official files were written by numpy 1.x, whose array constructor lives in numpy.core.
    path.write_bytes(payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


@pytest.fixture
def cifar_folder(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``cifar-10-batches-py/`` with 5 train batches of 3 rows, a test batch of 2 rows and batches.meta."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "raw" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name, rows in [*((f"data_batch_{i}", 3) for i in range(1, 6)), ("test_batch", 2)]:
        data = rng.integers(0, 256, size=(rows, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=rows)
        write_cifar_batch(folder / name, data, [int(label) for label in labels])
        batches[name] = (data, labels)
    meta = {b"label_names": [name.encode() for name in CIFAR_NAMES], b"num_cases_per_batch": 3, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder, batches


def test_cifar10_folder_and_tarball_read_back_exactly(cifar_folder, tmp_path: Path) -> None:
    folder, batches = cifar_folder
    tarball = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(folder, arcname="cifar-10-batches-py")
    prepare("--dataset", "cifar10", "--source", str(folder.parent), "--out", str(tmp_path / "from_folder"))
    prepare("--dataset", "cifar10", "--source", str(tarball), "--out", str(tmp_path / "from_tar"), "--shards", "4")

    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    for out in ("from_folder", "from_tar"):
        x, labels = read_arrays(str(tmp_path / out))
        np.testing.assert_array_equal(x, to_model(np.concatenate([data for data, _ in train])))
        np.testing.assert_array_equal(labels, np.concatenate([batch_labels for _, batch_labels in train]))
    folder_manifest = load_manifest(str(tmp_path / "from_folder"))
    tar_manifest = load_manifest(str(tmp_path / "from_tar"))
    assert folder_manifest.label_names == CIFAR_NAMES and folder_manifest.num_classes == 10
    assert (folder_manifest.item_shape, folder_manifest.dtype) == ((3, 32, 32), "uint8")
    assert folder_manifest.value_range == (0, 255) and folder_manifest.model_range == (-1.0, 1.0)
    assert [shard.num_rows for shard in tar_manifest.shards] == [3, 4, 4, 4]
    assert folder_manifest.version == tar_manifest.version, "same content, different sharding: same version"

    prepare("--dataset", "cifar10", "--source", str(tarball), "--split", "test", "--out", str(tmp_path / "test"))
    x, labels = read_arrays(str(tmp_path / "test"))
    np.testing.assert_array_equal(x, to_model(batches["test_batch"][0]))
    np.testing.assert_array_equal(labels, batches["test_batch"][1])


def test_cifar10_missing_batch_is_one_clear_error(cifar_folder, tmp_path: Path, capsys) -> None:
    folder, _ = cifar_folder
    (folder / "data_batch_3").unlink()
    assert main(["--dataset", "cifar10", "--source", str(folder), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "data_batch_3 not found" in error and str(folder) in error and len(error.splitlines()) == 1


def test_imagenet32_batches_in_numeric_order_with_zero_based_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "Imagenet32_train_npz"
    folder.mkdir()
    expected = []
    for number, rows in [(1, 3), (2, 2), (10, 2)]:  # batch 10 must come after batch 2
        data = rng.integers(0, 256, size=(rows, 3072), dtype=np.uint8)
        labels = rng.integers(1, 1001, size=rows).tolist()
        np.savez(folder / f"train_data_batch_{number}.npz", data=data, labels=labels, mean=data.mean(axis=0))
        expected.append((data, np.asarray(labels) - 1))
    prepare("--dataset", "imagenet32", "--source", str(folder), "--out", str(tmp_path / "out"), "--shards", "2")

    x, labels = read_arrays(str(tmp_path / "out"))
    np.testing.assert_array_equal(x, to_model(np.concatenate([data for data, _ in expected])))
    np.testing.assert_array_equal(labels, np.concatenate([zero_based for _, zero_based in expected]))
    assert load_manifest(str(tmp_path / "out")).num_classes == 1000


def test_imagenet32_rejects_zero_based_labels(tmp_path: Path, capsys) -> None:
    np.savez(tmp_path / "train_data_batch_1.npz", data=np.zeros((2, 3072), np.uint8), labels=[0, 5])
    assert main(["--dataset", "imagenet32", "--source", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "1-based" in capsys.readouterr().err


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """cat/ and dog/ class folders with PNG and JPEG files, one of them non-square, and CelebA attributes."""
    rng = np.random.default_rng(2)
    root = tmp_path / "images"
    for folder in ("cat", "dog"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "cat" / "a.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "cat" / "b.PNG")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "dog" / "c.jpg", quality=90)
    Image.new("RGB", (64, 40), (200, 30, 90)).save(root / "dog" / "d.png")
    (root / ATTRIBUTE_FILE).write_text(
        "4\nSmiling Young\n"
        "d.png  1 -1\n"
        "a.png -1  1\n"
        "c.jpg  1  1\n"
        "b.PNG -1 -1\n"
    )
    return root


def test_image_folder_labels_pixels_and_attributes(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare("--dataset", "image-folder", "--source", str(image_folder), "--out", str(out))

    x, labels = read_arrays(str(out))
    manifest = load_manifest(str(out))
    assert manifest.label_names == ["cat", "dog"] and labels.tolist() == [0, 0, 1, 1]
    names = ("cat/a.png", "cat/b.PNG", "dog/c.jpg")
    decoded = [np.asarray(Image.open(image_folder / name).convert("RGB")) for name in names]
    for row, pixels in zip(x, decoded):
        np.testing.assert_array_equal(row, pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(127.5) - 1)
    stored = np.rint((x[3] + 1) * 127.5)
    assert stored.shape == (3, 32, 32)
    np.testing.assert_allclose(stored.reshape(3, -1).mean(axis=1), [200, 30, 90], atol=1)

    assert manifest.attribute_names == ["Smiling", "Young"]
    table = pq.read_table(out / manifest.shards[0].path)
    assert table.schema.field("Smiling").type == "int8"
    assert table.column("Smiling").to_pylist() == [-1, -1, 1, 1]
    assert table.column("Young").to_pylist() == [1, -1, 1, -1]


def test_image_folder_without_attribute_row_is_an_error(image_folder: Path, tmp_path: Path, capsys) -> None:
    Image.new("RGB", (32, 32)).save(image_folder / "dog" / "e.png")
    assert main(["--dataset", "image-folder", "--source", str(image_folder), "--out", str(tmp_path / "out")]) == 2
    assert "no attribute row for image dog/e.png" in capsys.readouterr().err


def test_same_inputs_same_bytes_and_version_new_content_new_version(tmp_path: Path) -> None:
    for out, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        prepare("--dataset", "8squares", "--num-points", "300", "--seed", seed, "--shards", "2",
                "--out", str(tmp_path / out))
    first, again, other = (load_manifest(str(tmp_path / out)) for out in "abc")
    assert first.version == again.version != other.version
    for shard in first.shards:
        assert (tmp_path / "a" / shard.path).read_bytes() == (tmp_path / "b" / shard.path).read_bytes()
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    low, high = first.value_range
    x, labels = read_arrays(str(tmp_path / "a"))
    assert labels is None and x.dtype == np.float32 and (x.min(), x.max()) == (low, high)


def test_rewriting_a_dataset_replaces_its_shards(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    prepare("--dataset", "rings", "--num-points", "100", "--shards", "4", "--out", str(out))
    prepare("--dataset", "rings", "--num-points", "100", "--shards", "2", "--out", str(out))
    assert sorted(path.name for path in out.iterdir()) == [
        "manifest.json", "shard-00000-of-00002.parquet", "shard-00001-of-00002.parquet"
    ]
    assert validate_dataset(str(out)).num_rows == 100


def test_help_lists_every_dataset(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert all(name in usage for name in ("8squares", "digits", "patches", "cifar10", "imagenet32", "image-folder"))


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--dataset", "cifar10"], "needs --source"),
    ],
)
def test_cli_errors_are_one_line_on_stderr(args: list[str], expected: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "pipeline/prepare_data.py", *args, "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    assert not (tmp_path / "out").exists()
