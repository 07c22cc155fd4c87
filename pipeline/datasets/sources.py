"""Raw inputs as a stream of row chunks: the built-in datasets, CIFAR-10 pickles and ImageNet32 npz batches.

Every reader returns a :class:`Source`: the item shape, dtype and transform to model space, plus a
function that yields the rows in a fixed order as chunks, so large inputs never sit in memory whole.
:mod:`pipeline.datasets.catalog` maps dataset names to these readers.
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from cdrl.data import load_builtin
from cdrl.data.toy2d import TOY_DISTRIBUTIONS
from pipeline.datasets.checks import check_labels
from pipeline.datasets.errors import DatasetError
from pipeline.datasets.manifest import ModelTransform

UINT8_TO_MODEL = ModelTransform(divide_by=127.5, add=-1.0)
RGB32_ITEM = (3, 32, 32)
# Grey levels of the built-in image sets: stored exactly as uint8 in 0..levels, model space x / (levels/2) - 1.
BUILTIN_IMAGE_LEVELS = {"digits": 16, "patches": 255}
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR_FOLDER = "cifar-10-batches-py"
IMAGENET32_CLASSES = 1000


@dataclass(frozen=True)
class Chunk:
    """Consecutive rows: flattened items (n, item_size), int64 labels (n,) and int8 attribute columns."""

    data: np.ndarray
    labels: np.ndarray | None = None
    attributes: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """A raw dataset ready to be written as shards.

    ``value_range`` is None for float data: the writer measures it. ``origin`` names the input in errors.
    """

    name: str
    origin: str
    num_rows: int
    item_shape: tuple[int, ...]
    dtype: str
    transform: ModelTransform
    value_range: tuple[float, float] | None
    has_labels: bool
    num_classes: int | None
    label_names: list[str] | None
    attribute_names: list[str]
    chunks: Callable[[], Iterator[Chunk]]
    provenance: dict


def builtin_source(name: str, num_points: int, seed: int) -> Source:
    """A dataset from ``cdrl.data.load_builtin``: 2-D toys as float32, image sets as exact uint8 levels."""
    data, labels = load_builtin(name, num_points, seed)
    provenance = {"num_points": num_points, "seed": seed} if name != "digits" else {}
    common = dict(name=name, origin=f"built-in dataset {name}", provenance=provenance)
    if name in TOY_DISTRIBUTIONS:
        return in_memory_source(data.reshape(len(data), -1), data.shape[1:], labels, ModelTransform(), None, **common)
    levels = BUILTIN_IMAGE_LEVELS[name]
    transform = ModelTransform(divide_by=levels / 2, add=-1.0)
    stored = quantize(data, transform, levels, name)
    return in_memory_source(stored, data.shape[1:], labels, transform, (0.0, float(levels)), **common)


def quantize(values: np.ndarray, transform: ModelTransform, levels: int, where: str) -> np.ndarray:
    """Flattened uint8 levels whose model-space values equal ``values`` exactly; DatasetError if none do."""
    stored = np.rint((values.astype(np.float64) - transform.add) * transform.divide_by)
    if stored.min() < 0 or stored.max() > levels or not np.array_equal(transform.apply(stored), values):
        raise DatasetError(
            f"{where}: values are not exactly k / {transform.divide_by} {transform.add:+} for k in 0..{levels}"
        )
    return stored.astype(np.uint8).reshape(len(values), -1)


def in_memory_source(
    data: np.ndarray,
    item_shape: tuple[int, ...],
    labels: np.ndarray | None,
    transform: ModelTransform,
    value_range: tuple[float, float] | None,
    *,
    name: str,
    origin: str,
    provenance: dict,
    num_classes: int | None = None,
    label_names: list[str] | None = None,
) -> Source:
    """A Source over arrays already in memory: ``data`` (n, item_size) and optional ``labels`` (n,)."""
    labels = None if labels is None else np.asarray(labels, dtype=np.int64)
    if labels is not None and num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    return Source(
        name=name,
        origin=origin,
        num_rows=len(data),
        item_shape=tuple(int(size) for size in item_shape),
        dtype=str(data.dtype),
        transform=transform,
        value_range=value_range,
        has_labels=labels is not None,
        num_classes=num_classes,
        label_names=label_names,
        attribute_names=[],
        chunks=lambda: iter([Chunk(data, labels)]),
        provenance=provenance,
    )


def cifar10_source(path: Path, split: str) -> Source:
    """CIFAR-10 from the official python pickles, in a folder or in ``cifar-10-python.tar.gz``.

    Each batch is a dict with b"data" (N, 3072) uint8 (R, G, B planes of 32×32, row-major) and b"labels".
    The pickles are loaded with an unpickler that admits only numpy arrays and builtins.
    """
    if split not in CIFAR_BATCHES:
        raise DatasetError(f"cifar10: unknown split {split!r}; choose train or test")
    wanted = CIFAR_BATCHES[split]
    batches = _cifar_from_archive(path, wanted) if path.is_file() else _cifar_from_folder(path, wanted)
    data, labels = [], []
    for batch_name in wanted:
        where = f"{path}:{batch_name}"
        if batch_name not in batches:
            raise DatasetError(f"{path}: CIFAR-10 batch {batch_name} not found (expected {', '.join(wanted)})")
        batch = batches[batch_name]
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise DatasetError(f"{where}: not a CIFAR-10 batch (needs a dict with b'data' and b'labels')")
        data.append(_rgb32_rows(batch[b"data"], where))
        labels.append(_labels(batch[b"labels"], len(data[-1]), where))
        check_labels(labels[-1], 10, where)
    meta = batches.get("batches.meta")
    raw_names = meta.get(b"label_names") if isinstance(meta, dict) else None
    label_names = [name.decode() for name in raw_names] if raw_names else None
    return in_memory_source(
        np.concatenate(data), RGB32_ITEM, np.concatenate(labels), UINT8_TO_MODEL, (0.0, 255.0),
        name="cifar10", origin=str(path), provenance={"source": str(path), "split": split},
        num_classes=10, label_names=label_names,
    )


def imagenet32_source(path: Path, split: str) -> Source:
    """Downsampled ImageNet 32×32 from the official npz batches (``train_data_batch_1.npz`` … or ``val_data.npz``).

    Each file holds "data" (N, 3072) uint8 in CIFAR's layout and "labels" 1..1000 (stored 0-based);
    an optional "mean" is ignored. Batches are read one at a time, in numeric order.
    """
    pattern = {"train": "train_data_batch_*.npz", "test": "val_data.npz"}.get(split)
    if pattern is None:
        raise DatasetError(f"imagenet32: unknown split {split!r}; choose train or test")
    files = [path] if path.is_file() else sorted(path.rglob(pattern), key=_batch_number)
    if not files:
        raise DatasetError(f"{path}: no ImageNet32 files matching {pattern}")
    counts = [len(_npz_arrays(file, "labels")[0]) for file in files]

    def chunks() -> Iterator[Chunk]:
        for file, count in zip(files, counts):
            data, labels = _npz_arrays(file, "data", "labels")
            labels = _labels(labels, count, str(file))
            check_labels(labels - 1, IMAGENET32_CLASSES, f"{file} (labels must be 1-based, 1..1000)")
            yield Chunk(_rgb32_rows(data, str(file)), labels - 1)

    return Source(
        name="imagenet32", origin=str(path), num_rows=sum(counts), item_shape=RGB32_ITEM, dtype="uint8",
        transform=UINT8_TO_MODEL, value_range=(0.0, 255.0), has_labels=True, num_classes=IMAGENET32_CLASSES,
        label_names=None, attribute_names=[], chunks=chunks, provenance={"source": str(path), "split": split},
    )


def _cifar_from_folder(path: Path, wanted: list[str]) -> dict[str, object]:
    """Unpickled batches (and batches.meta when present) from ``path`` or ``path/cifar-10-batches-py``."""
    folder = path / CIFAR_FOLDER if (path / CIFAR_FOLDER).is_dir() else path
    batches = {}
    for batch_name in [*wanted, "batches.meta"]:
        if (folder / batch_name).is_file():
            batches[batch_name] = _unpickle((folder / batch_name).read_bytes(), str(folder / batch_name))
    return batches


def _cifar_from_archive(path: Path, wanted: list[str]) -> dict[str, object]:
    """Unpickled batches (and batches.meta when present) from a tar archive such as cifar-10-python.tar.gz."""
    batches = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                base_name = PurePosixPath(member.name).name
                if member.isfile() and base_name in [*wanted, "batches.meta"]:
                    payload = archive.extractfile(member).read()
                    batches[base_name] = _unpickle(payload, f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DatasetError(f"{path}: not a readable tar archive ({error})") from error
    return batches


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays and plain Python values, never arbitrary objects."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(payload: bytes, where: str) -> object:
    """A CIFAR python pickle (Python 2 era: strings come back as bytes)."""
    try:
        return _ArrayUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except Exception as error:  # pickle raises many types on foreign bytes
        raise DatasetError(f"{where}: not a CIFAR-10 python pickle ({type(error).__name__}: {error})") from error


def _npz_arrays(file: Path, *keys: str) -> list[np.ndarray]:
    """The named arrays of an npz file, read without unpickling."""
    try:
        with np.load(file) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise DatasetError(f"{file}: npz file has no {missing[0]!r} array (has {', '.join(archive.files)})")
            return [archive[key] for key in keys]
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{file}: not a readable npz file ({error})") from error


def _rgb32_rows(data: object, where: str) -> np.ndarray:
    """Check that ``data`` is uint8 (N, 3072), the CIFAR / ImageNet32 row layout, and return it."""
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{where}: data must be a uint8 array of shape (N, 3072), got {found}")
    return data


def _labels(labels: object, count: int, where: str) -> np.ndarray:
    """Integer labels as int64, one per row."""
    array = np.asarray(labels)
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer):
        raise DatasetError(f"{where}: expected {count} integer labels, got {array.dtype} {array.shape}")
    return array.astype(np.int64)


def _batch_number(path: Path) -> tuple[int, str]:
    """Sort key putting ``train_data_batch_10`` after ``train_data_batch_9``."""
    suffix = path.stem.rsplit("_", 1)[-1]
    return (int(suffix) if suffix.isdigit() else 0, path.name)
