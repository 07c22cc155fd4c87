"""Dataset names and the reader of each one's raw format."""
from __future__ import annotations

from pathlib import Path

from cdrl.data import BUILTIN_DATASETS
from pipeline.datasets.errors import DatasetError
from pipeline.datasets.image_folder import image_folder_source
from pipeline.datasets.sources import Source, builtin_source, cifar10_source, imagenet32_source

DATASET_NAMES = (*BUILTIN_DATASETS, "cifar10", "imagenet32", "image-folder")


def open_source(
    name: str,
    source: str | None = None,
    *,
    num_points: int = 50_000,
    seed: int = 0,
    split: str = "train",
    image_size: int = 32,
    attributes: str | None = None,
) -> Source:
    """The :class:`Source` for dataset ``name``; DatasetError for unknown names or unusable inputs."""
    if name not in DATASET_NAMES:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if name in BUILTIN_DATASETS:
        if source is not None:
            raise DatasetError(f"dataset {name!r} is built in and takes no --source (got {source})")
        return builtin_source(name, num_points, seed)
    if source is None:
        raise DatasetError(f"dataset {name!r} needs --source, the folder or file holding its raw files")
    path = Path(source)
    if not path.exists():
        raise DatasetError(f"{path}: --source does not exist")
    if name == "cifar10":
        return cifar10_source(path, split)
    if name == "imagenet32":
        return imagenet32_source(path, split)
    return image_folder_source(path, image_size, Path(attributes) if attributes else None)
