"""Convert a raw dataset into versioned Parquet shards plus a manifest, in a local folder or under s3://.

    python pipeline/prepare_data.py --dataset cifar10 --source cifar-10-python.tar.gz --out s3://data/cifar10
    python pipeline/prepare_data.py --dataset 8squares --out runs/data/8squares --num-points 100000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a script, Python puts pipeline/ itself first on sys.path, where pipeline/datasets would shadow the
# Hugging Face ``datasets`` package and ``pipeline`` is not importable: put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pipeline.cli import Parser  # noqa: E402
from pipeline.datasets.catalog import DATASET_NAMES, open_source  # noqa: E402
from pipeline.datasets.errors import DatasetError  # noqa: E402
from pipeline.storage import StorageError  # noqa: E402
from pipeline.datasets.writer import write_dataset  # noqa: E402


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = Parser(
        prog="pipeline/prepare_data.py",
        description="Write a dataset as Parquet shards + manifest.json (the manifest last, so readers only "
        "ever see complete datasets). Same inputs give byte-identical shards and the same version id.",
        epilog="S3 settings come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and "
        "AWS_DEFAULT_REGION.",
    )
    parser.add_argument(
        "--dataset", required=True, metavar="NAME",
        help=f"one of: {', '.join(DATASET_NAMES)}. cifar10: the python-pickle batches (folder or "
        "cifar-10-python.tar.gz); imagenet32: the official npz batches (train_data_batch_N.npz, val_data.npz); "
        "image-folder: PNG/JPEG files, optionally in class sub-folders, with an optional list_attr_celeba.txt",
    )
    parser.add_argument("--out", required=True, metavar="URI", help="output folder or s3://bucket/prefix")
    parser.add_argument("--source", metavar="PATH", help="raw input (cifar10, imagenet32, image-folder only)")
    parser.add_argument("--shards", type=positive_int, metavar="N", help="number of shards (default: ~128 MiB each)")
    parser.add_argument(
        "--num-points", type=positive_int, default=50_000, metavar="N",
        help="rows to draw for the 2-D toys and patches (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the 2-D toys and patches (default: 0)")
    parser.add_argument(
        "--split", choices=("train", "test"), default="train",
        help="cifar10 / imagenet32 split: train batches, or test_batch / val_data.npz (default: train)",
    )
    parser.add_argument(
        "--image-size", type=positive_int, default=32, metavar="PX",
        help="image-folder: side of the center-cropped, resized square images (default: 32)",
    )
    parser.add_argument(
        "--attributes", metavar="PATH",
        help="image-folder: CelebA-style attribute file (default: list_attr_celeba.txt in --source, if present)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Prepare the dataset; on bad input print one ``error:`` line to stderr and return 2."""
    args = build_parser().parse_args(argv)
    try:
        source = open_source(
            args.dataset, args.source, num_points=args.num_points, seed=args.seed, split=args.split,
            image_size=args.image_size, attributes=args.attributes,
        )
        manifest = write_dataset(source, args.out, args.shards)
    except (DatasetError, StorageError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(
        f"wrote {manifest.dataset}: {manifest.num_rows} rows of {manifest.dtype} {list(manifest.item_shape)} "
        f"in {len(manifest.shards)} shards to {args.out}; version {manifest.version}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
