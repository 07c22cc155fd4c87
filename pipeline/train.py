"""Train a CDRL model.

    python pipeline/train.py                                   # the fast 2-D toy, embedded default
    python pipeline/train.py --config pipeline/configs/digits.yaml train.iterations=500 run.name=d1
    python pipeline/train.py --config pipeline/configs/cifar10.yaml --dry-run
    python pipeline/train.py run.name=toy-ft --warm-start models:/cdrl-8squares@champion   # fine-tune the champion

Overrides are dotted ``section.key=value`` pairs (values parsed as YAML). Re-running with the same
``run.name`` resumes from that run's latest checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a script, Python puts pipeline/ first on sys.path, where pipeline/datasets would shadow the
# `datasets` package: put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from cdrl.checkpoint import FORMAT  # noqa: E402
from cdrl.config import ConfigError, load_config  # noqa: E402
from cdrl.factory import build_nets  # noqa: E402
from cdrl.nets import count_parameters  # noqa: E402
from pipeline.cli import REPO_ROOT, Parser, run_main, write_json  # noqa: E402

DEFAULT_CONFIG = REPO_ROOT / "pipeline" / "configs" / "toy.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(
        prog="pipeline/train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. train.iterations=100")
    parser.add_argument("--summary", metavar="OUT.json", help="write the run summary (checkpoint, step, metrics) here")
    parser.add_argument("--dry-run", action="store_true", help="resolve the config, build the method's nets, print them; no training")
    parser.add_argument("--warm-start", metavar="REF",
                        help="start from the weights and EMAs of another model (checkpoint path or URI, run name, or "
                             "models:/NAME@ALIAS); fresh optimizers and step count. A models:/ alias that does not "
                             "exist yet (first run of a schedule) trains from scratch. Resuming this run wins over it")
    parser.add_argument("--backend", choices=["ray", "local"], default="ray",
                        help="ray: Ray Train with ray.num_workers workers (joins a running cluster or starts one); "
                             "local: this process only, no Ray, no MLflow (default: %(default)s)")
    parser.epilog = ("Credentials come only from the environment (AWS_*, MLFLOW_TRACKING_*), the Ray runtime env "
                     "or the cloud's identity; config values never hold them. Exit codes: 0 done, 2 bad input "
                     "(one `error:` line, nothing trained), 1 the run was stopped for the reason on its `error:` "
                     "line (diverged, storage unreachable past faults.storage_wait_s).")
    return parser.parse_intermixed_args(argv)  # overrides may come before or after the options


def check_backend(config, backend: str) -> None:
    """Settings that only one backend can honour, checked before any data is touched."""
    if backend == "local" and config.run.storage_path and "://" in config.run.storage_path:
        raise ConfigError(f"run.storage_path: {config.run.storage_path!r} is a URI; --backend local keeps "
                          "checkpoints in a local folder (use --backend ray for s3://)")
    workers = config.ray.num_workers
    if backend == "ray" and config.train.batch_size % workers:
        raise ConfigError(f"train.batch_size: {config.train.batch_size} is not divisible by "
                          f"ray.num_workers={workers}")
    if config.data.horizontal_flip and len(data_shape_for(config)) != 3:
        raise ConfigError("data.horizontal_flip: only image data (C, H, W) can be flipped")


def check_method_fits_data(config) -> None:
    """Methods that cannot train on this data's size, refused before any data is touched."""
    import math

    from cdrl.objectives.score_matching import EXACT_MAX_DIMS

    if config.method != "exact_sm":
        return
    dims = math.prod(data_shape_for(config))  # a manifest read for data.uri: only for the method that needs it
    if dims > EXACT_MAX_DIMS:
        raise ConfigError(f"method: exact_sm is for data of at most {EXACT_MAX_DIMS} dimensions (one backward pass "
                          f"per dimension), {config.data.name} has {dims}; use sliced_sm or dsm")


KNOWN_SHAPES = {"digits": (1, 8, 8), "patches": (3, 32, 32), "cifar10": (3, 32, 32), "imagenet32": (3, 32, 32)}


def data_shape_for(config) -> tuple[int, ...]:
    """Item shape without loading the data: known datasets by name, otherwise the shards' manifest."""
    from cdrl.data import TOY_DISTRIBUTIONS

    if config.data.name in TOY_DISTRIBUTIONS:
        return (2,)
    if config.data.name in KNOWN_SHAPES:
        return KNOWN_SHAPES[config.data.name]
    if config.data.uri:
        from pipeline.datasets.reader import load_manifest

        return tuple(load_manifest(config.data.uri).item_shape)
    raise ConfigError(f"data.name: unknown built-in dataset {config.data.name!r} and no data.uri given")


def dry_run(config) -> dict:
    shape = data_shape_for(config)
    counts = {name: count_parameters(net) for name, net in build_nets(config, shape).items()}
    return {"run_name": config.run.name, "dry_run": True, "checkpoint": None, "step": 0, "data_shape": list(shape),
            "param_counts": counts, "metrics": {}, "config": config.to_dict(), "checkpoint_format": FORMAT}


def warm_start_from(ref: str, config) -> dict | None:
    """The weights (``pipeline.loop.warm_start_weights``) of model ``ref``, checked to fit ``config``'s nets;
    None when ``ref`` is a registered alias that does not exist yet."""
    from pipeline.checkpoints import read_checkpoint
    from pipeline.loop import warm_start_weights
    from pipeline.model_ref import resolve_checkpoint
    from pipeline.registry import alias_version, parse_model_uri
    from pipeline.tracking import tracking_uri

    if ref.startswith("models:/"):
        name, alias, _ = parse_model_uri(ref)
        if alias and alias_version(name, alias, tracking_uri(config)) is None:
            print(f"{ref} does not exist yet: training from scratch")
            return None
    checkpoint = read_checkpoint(resolve_checkpoint(ref, tracking_uri(config)))
    for section in ("model", "schedule"):
        if checkpoint["config"][section] != config.to_dict()[section]:
            raise ConfigError(f"--warm-start {ref}: its {section} settings differ from this run's; "
                              f"a warm start needs the same nets and noise schedule")
    print(f"warm start from {ref} (step {checkpoint['trainer']['step']})")
    return warm_start_weights(checkpoint)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config, args.overrides)
    check_backend(config, args.backend)
    check_method_fits_data(config)
    if args.dry_run:
        import yaml

        summary = dry_run(config)
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        print(f"data shape: {tuple(summary['data_shape'])}")
        for name, count in summary["param_counts"].items():
            print(f"{name}: {count:,} parameters")
    else:
        from pipeline.evaluation import check_extractor_available
        from pipeline.run_data import dataset_for_run

        check_extractor_available(config, data_shape_for(config))  # e.g. missing FID weights: fail before any work
        data_uri, manifest = dataset_for_run(config)
        warm_start = warm_start_from(args.warm_start, config) if args.warm_start else None
        if args.backend == "local":
            from pipeline.local_backend import train_locally

            result = train_locally(config, data_uri, manifest, warm_start)
        else:
            from pipeline.ray_backend import train_on_ray

            result = train_on_ray(config, data_uri, manifest, warm_start)
        print_result(result)
        summary = {**result.to_summary(), "param_counts": dry_run(config)["param_counts"]}
    if args.summary:
        write_json(args.summary, summary)
    return 0


def print_result(result) -> None:
    """The end of a run's output: step, time, final metrics, checkpoint and artifacts (a ``RunResult``)."""
    print(f"\nrun {result.run_name}: step {result.step} in {result.train_seconds:.0f}s")
    for key, value in result.metrics.items():
        print(f"  {key}: {value:.4g}")
    print(f"  checkpoint: {result.checkpoint}")
    for name, path in result.artifacts.items():
        print(f"  {name}: {path}")


if __name__ == "__main__":
    from pipeline.datasets.errors import DatasetError
    from pipeline.storage import StorageError
    from pipeline.health_guard import TrainingDiverged
    from pipeline.run_failures import InfrastructureFailure
    from pipeline.tracking import TrackingError

    from pipeline.model_ref import ModelRefError  # registry.RegistryError is one

    run_main(main, (ConfigError, DatasetError, StorageError, TrackingError, FileNotFoundError, FloatingPointError,
                    ModelRefError),
             (TrainingDiverged, InfrastructureFailure))
