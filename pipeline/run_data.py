"""The dataset a run trains on: prepared Parquet shards at ``data.uri``, or built-in data prepared once."""
from __future__ import annotations

from pathlib import Path

from cdrl.config import Config
from pipeline import storage
from pipeline.datasets.catalog import open_source
from pipeline.datasets.manifest import MANIFEST_NAME, Manifest
from pipeline.datasets.reader import validate_dataset
from pipeline.datasets.writer import write_dataset


def default_data_uri(config: Config) -> str:
    d = config.data
    return str(Path(config.run.output_dir).absolute() / "data" / f"{d.name}-n{d.num_points}-seed{config.run.seed}")


def dataset_for_run(config: Config) -> tuple[str, Manifest]:
    """(uri, validated manifest). Without ``data.uri`` the built-in ``data.name`` is written as shards once."""
    uri = config.data.uri or default_data_uri(config)
    if not config.data.uri and not storage.exists(storage.join(uri, MANIFEST_NAME)):
        print(f"preparing {config.data.name} shards at {uri}")
        write_dataset(open_source(config.data.name, num_points=config.data.num_points, seed=config.run.seed), uri)
    return uri, validate_dataset(uri)
