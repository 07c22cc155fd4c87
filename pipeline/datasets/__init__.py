"""Versioned Parquet dataset shards (local folder or s3://): writing them, and reading them back validated.

Layout: ``shard-00000-of-000NN.parquet`` files plus ``manifest.json`` (written last). See ``manifest.py``
for the format, ``reader.py`` for the API the training code uses, and ``pipeline/prepare_data.py`` to write one.
"""
from pipeline.datasets.errors import DatasetError
from pipeline.datasets.manifest import Manifest, ShardInfo
from pipeline.datasets.reader import load_manifest, read_arrays, ray_dataset, to_model_space, validate_dataset

__all__ = [
    "DatasetError",
    "Manifest",
    "ShardInfo",
    "load_manifest",
    "read_arrays",
    "ray_dataset",
    "to_model_space",
    "validate_dataset",
]
