"""A folder of PNG / JPEG images (class sub-folders become labels) plus optional CelebA-style attributes."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.datasets.errors import DatasetError
from pipeline.datasets.manifest import DATA_COLUMN, LABEL_COLUMN
from pipeline.datasets.sources import UINT8_TO_MODEL, Chunk, Source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ATTRIBUTE_FILE = "list_attr_celeba.txt"
CHUNK_IMAGES = 1024


def image_folder_source(root: Path, image_size: int, attribute_file: Path | None = None) -> Source:
    """Images under ``root``, resized and center-cropped to ``image_size`` squares, as uint8 NCHW rows.

    Images directly in ``root`` have no labels; images in ``root/<class>/…`` get the index of ``<class>``
    in sorted order. Attributes come from ``attribute_file``, or from ``root/list_attr_celeba.txt`` if present.
    """
    if not root.is_dir():
        raise DatasetError(f"{root}: image-folder --source must be a folder")
    if image_size < 1:
        raise DatasetError(f"{root}: --image-size must be positive, got {image_size}")
    images = (path for path in root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    files = sorted((path.relative_to(root) for path in images), key=lambda relative: relative.as_posix())
    if not files:
        raise DatasetError(f"{root}: no {'/'.join(IMAGE_SUFFIXES)} images found")
    class_names = sorted({relative.parts[0] for relative in files if len(relative.parts) > 1})
    if class_names and any(len(relative.parts) == 1 for relative in files):
        raise DatasetError(f"{root}: images both directly in the folder and in class sub-folders; use one layout")
    class_index = {name: index for index, name in enumerate(class_names)}
    labels = np.array([class_index[relative.parts[0]] for relative in files], dtype=np.int64) if class_names else None
    if attribute_file is None and (root / ATTRIBUTE_FILE).is_file():
        attribute_file = root / ATTRIBUTE_FILE
    attribute_names, attributes = _attributes_for(files, attribute_file) if attribute_file else ([], {})

    def chunks() -> Iterator[Chunk]:
        for start in range(0, len(files), CHUNK_IMAGES):
            stop = min(start + CHUNK_IMAGES, len(files))
            data = np.stack([load_image(root / relative, image_size) for relative in files[start:stop]])
            yield Chunk(
                data,
                None if labels is None else labels[start:stop],
                {name: values[start:stop] for name, values in attributes.items()},
            )

    provenance = {"source": str(root), "image_size": image_size}
    if attribute_file:
        provenance["attributes"] = str(attribute_file)
    return Source(
        name="image-folder", origin=str(root), num_rows=len(files), item_shape=(3, image_size, image_size),
        dtype="uint8", transform=UINT8_TO_MODEL, value_range=(0.0, 255.0), has_labels=labels is not None,
        num_classes=len(class_names) or None, label_names=class_names or None, attribute_names=attribute_names,
        chunks=chunks, provenance=provenance,
    )


def load_image(path: Path, size: int) -> np.ndarray:
    """One image as flattened uint8 CHW RGB: EXIF-rotated, center-cropped to a square, resized (bicubic)."""
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"{path}: not a readable image ({error})") from error
    square = ImageOps.fit(upright, (size, size), method=Image.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.uint8).transpose(2, 0, 1).reshape(-1)


def read_attribute_file(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """A CelebA-style ``list_attr_celeba.txt``: (attribute names, file name → int8 values ±1).

    Line 1 is the image count, line 2 the attribute names, then ``file v1 v2 …`` per image.
    """
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read attribute file ({error})") from error
    if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise DatasetError(f"{path}: expected an image count on line 1 and attribute names on line 2")
    names, rows = lines[1], lines[2:]
    if int(lines[0][0]) != len(rows):
        raise DatasetError(f"{path}: line 1 announces {lines[0][0]} images but {len(rows)} rows follow")
    clashes = {DATA_COLUMN, LABEL_COLUMN} & set(names) or {name for name, n in Counter(names).items() if n > 1}
    if clashes:
        raise DatasetError(f"{path}: attribute names {sorted(clashes)} are duplicated or reserved")
    table = {}
    for line_number, row in enumerate(rows, start=3):
        values = row[1:]
        if len(values) != len(names) or any(value not in ("1", "-1") for value in values):
            raise DatasetError(f"{path}:{line_number}: expected a file name and {len(names)} values of 1 or -1")
        table[row[0]] = np.array(values, dtype=np.int8)
    return names, table


def _attributes_for(files: list[Path], attribute_file: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Attribute columns in ``files`` order, matching rows by relative path, else by file name."""
    names, table = read_attribute_file(attribute_file)
    keys = []
    for relative in files:
        key = relative.as_posix() if relative.as_posix() in table else relative.name
        if key not in table:
            raise DatasetError(f"{attribute_file}: no attribute row for image {relative.as_posix()}")
        keys.append(key)
    shared = [key for key, n in Counter(keys).items() if n > 1]
    if shared:
        raise DatasetError(f"{attribute_file}: row {shared[0]} matches several images; name rows by relative path")
    matrix = np.stack([table[key] for key in keys])
    return names, {name: matrix[:, column] for column, name in enumerate(names)}
