"""Value checks shared by the writer (on raw inputs) and the reader (on shards)."""
from __future__ import annotations

import numpy as np

from pipeline.datasets.errors import DatasetError


def check_finite(values: np.ndarray, where: str) -> None:
    """Raise DatasetError when float ``values`` hold NaN or ±inf."""
    if np.issubdtype(values.dtype, np.floating):
        bad = values.size - int(np.count_nonzero(np.isfinite(values)))
        if bad:
            raise DatasetError(f"{where}: {bad} NaN/inf values in column data")


def check_range(values: np.ndarray, value_range: tuple[float, float], where: str) -> None:
    """Raise DatasetError when ``values`` leave the closed interval ``value_range``."""
    if values.size == 0:
        return
    low, high = values.min(), values.max()
    if low < value_range[0] or high > value_range[1]:
        raise DatasetError(
            f"{where}: values span [{low}, {high}], outside the value range [{value_range[0]}, {value_range[1]}]"
        )


def check_labels(labels: np.ndarray, num_classes: int | None, where: str) -> None:
    """Raise DatasetError when integer ``labels`` are negative or not below ``num_classes``."""
    if labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise DatasetError(f"{where}: negative label {low}")
    if num_classes is not None and high >= num_classes:
        raise DatasetError(f"{where}: label {high} is not below num_classes {num_classes}")
