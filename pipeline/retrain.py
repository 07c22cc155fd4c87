"""Scheduled retrain: train on the newest dataset version, promote the result only if it is better.

    python pipeline/retrain.py --config pipeline/configs/toy.yaml data.uri=s3://cdrl/data/8squares
    python pipeline/retrain.py --config pipeline/configs/digits.yaml --backend local retrain.min_improvement=0.5
    python pipeline/retrain.py --config pipeline/configs/toy.yaml --force        # retrain even if up to date

1. The newest dataset version at ``data.uri``: the dataset there, or, when ``data.uri`` is a folder of
   datasets (one sub-folder per version), the one whose manifest was published last.
2. Up to date (exit 0, nothing trained): the champion of ``registry.model_name`` - or the last challenger,
   so a rejected model is not retrained every night - was trained on this dataset version with this config.
3. Otherwise train a run ``RUN.NAME-retrain-YYYYmmdd-HHMMSS`` (``--backend``, as pipeline/train.py), warm-started
   from the champion's weights (``retrain.warm_start``, ``retrain.iterations`` steps) or from scratch.
4. Evaluate it with the fixed protocol (``retrain.eval_num_samples``, ``eval.seed``, the dataset version's
   reference statistics), register it with alias ``challenger``, score the champion with the same protocol,
   and move ``champion`` only if the primary metric improves by at least ``retrain.min_improvement``.
5. The decision, both scores and both dataset versions go to the new run in MLflow (``retrain.*`` tags,
   ``retrain/*`` metrics and reports); ``--json`` writes them too.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo root, not pipeline/ (see train.py)

from cdrl.config import Config, ConfigError, load_config  # noqa: E402
from pipeline.cli import Parser, run_main, write_json  # noqa: E402
from pipeline.promotion import EXIT_CODES_HELP, EXIT_FAILED, EXIT_UP_TO_DATE  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(prog="pipeline/retrain.py", description=__doc__, epilog=EXIT_CODES_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config of the model to retrain")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. data.uri=s3://…")
    parser.add_argument("--force", action="store_true", help="retrain even when the champion is up to date")
    parser.add_argument("--backend", choices=["ray", "local"], default="ray",
                        help="how to train, as in pipeline/train.py (default: %(default)s)")
    parser.add_argument("--json", metavar="OUT", help="write the outcome (decision, scores, versions) here")
    parser.add_argument("--exit-zero", action="store_true", help="exit 0 when promoted or kept (see exit codes)")
    return parser.parse_intermixed_args(argv)


def newest_dataset(uri: str) -> str:
    """``uri`` if it holds a dataset, else its sub-folder whose manifest.json was written last."""
    from pipeline import storage
    from pipeline.datasets.errors import DatasetError
    from pipeline.datasets.manifest import MANIFEST_NAME

    if storage.exists(storage.join(uri, MANIFEST_NAME)):
        return uri
    if not storage.is_s3(uri):
        uri = storage.resolve(uri)[1]  # local datasets are named by absolute path
    manifests = storage.modified_ns([storage.join(storage.join(uri, folder), MANIFEST_NAME)
                                     for folder in storage.list_folders(uri)])
    if not manifests:
        raise DatasetError(f"{uri}: neither a prepared dataset nor a folder of datasets (no {MANIFEST_NAME}); "
                           "run pipeline/prepare_data.py")
    return max(manifests, key=manifests.get).rsplit("/", 1)[0]


def up_to_date(name: str, dataset_version: str, digest: str, uri: str) -> str | None:
    """Why there is nothing to do (a message), or None."""
    from pipeline.registry import CHALLENGER, CHAMPION, CONFIG_TAG, DATASET_TAG, alias_version

    for alias in (CHAMPION, CHALLENGER):
        version = alias_version(name, alias, uri)
        if version and version.tags.get(DATASET_TAG) == dataset_version and version.tags.get(CONFIG_TAG) == digest:
            return (f"up to date: {alias} models:/{name}/{version.version} was trained on dataset version "
                    f"{dataset_version[:12]} with this config; nothing to do (--force retrains)")
    return None


def warm_start_for(config: Config, name: str, uri: str) -> tuple[dict | None, str]:
    """(weights, where from): the champion's weights if it exists, warm starts are on and its nets fit."""
    from pipeline.checkpoints import read_checkpoint
    from pipeline.loop import warm_start_weights
    from pipeline.registry import CHAMPION, alias_version, checkpoint_for_model_uri

    champion = alias_version(name, CHAMPION, uri)
    if champion is None or not config.retrain.warm_start:
        return None, "scratch (no champion yet)" if champion is None else "scratch (retrain.warm_start=false)"
    checkpoint = read_checkpoint(checkpoint_for_model_uri(f"models:/{name}/{champion.version}", uri))
    for section in ("model", "schedule"):
        if checkpoint["config"][section] != config.to_dict()[section]:
            return None, f"scratch (the champion's {section} settings differ from the config's)"
    return warm_start_weights(checkpoint), f"champion models:/{name}/{champion.version} (step {checkpoint['trainer']['step']})"


def train(config: Config, backend: str, data_uri: str, manifest, warm_start: dict | None):
    """Train with ``backend`` as pipeline/train.py does; returns the ``pipeline.run_result.RunResult``."""
    if backend == "local":
        from pipeline.local_backend import train_locally

        return train_locally(config, data_uri, manifest, warm_start)
    from pipeline.ray_backend import train_on_ray

    return train_on_ray(config, data_uri, manifest, warm_start)


def user_errors() -> tuple[type[BaseException], ...]:
    """Bad input (exit 2, one line), as opposed to a retrain that failed (exit 1)."""
    from pipeline.datasets.errors import DatasetError
    from pipeline.storage import StorageError
    from pipeline.model_ref import ModelRefError  # registry.RegistryError is one
    from pipeline.tracking import TrackingError

    return ConfigError, DatasetError, StorageError, TrackingError, ModelRefError


def main(argv: list[str] | None = None) -> int:
    from pipeline.datasets.reader import validate_dataset
    from pipeline.registry import config_digest, model_name
    from pipeline.tracking import check_reachable, tracking_uri

    args = parse_args(argv)
    config = load_config(args.config, args.overrides)
    if not config.tracking.enabled:
        raise ConfigError("tracking.enabled: retrain needs MLflow (the registry holds the champion)")
    uri = tracking_uri(config)
    check_reachable(uri)
    if config.data.uri:
        data_uri = newest_dataset(config.data.uri)
        manifest = validate_dataset(data_uri)
    else:
        from pipeline.run_data import dataset_for_run

        data_uri, manifest = dataset_for_run(config)
    name, digest = model_name(config), config_digest(config)
    outcome = {"model": name, "dataset_version": manifest.version, "data_uri": data_uri, "config_digest": digest}
    print(f"dataset {manifest.dataset} version {manifest.version[:12]} at {data_uri}")
    reason = None if args.force else up_to_date(name, manifest.version, digest, uri)
    if reason:
        print(reason)
        if args.json:
            write_json(args.json, {**outcome, "decision": "up_to_date", "reason": reason})
        return EXIT_UP_TO_DATE
    try:
        return retrain(config, args, uri, data_uri, manifest, outcome)
    except user_errors():
        raise
    except Exception as err:  # a failed retrain is an outcome (exit 1), not a crash of the scheduler
        traceback.print_exc()
        print(f"error: retrain failed: {type(err).__name__}: {err}", file=sys.stderr)
        if args.json:
            write_json(args.json, {**outcome, "decision": "failed", "reason": f"{type(err).__name__}: {err}"})
        return EXIT_FAILED


def retrain(config: Config, args: argparse.Namespace, uri: str, data_uri: str, manifest, outcome: dict) -> int:
    from pipeline.evaluate import evaluate_model
    from pipeline.promotion import promote
    from pipeline.registry import CONFIG_TAG
    from pipeline.tracking import RUN_KIND_TAG, RunLogger, source_tags, start_run

    name, digest = outcome["model"], outcome["config_digest"]
    warm_start, origin = warm_start_for(config, name, uri)
    run_name = f"{config.run.name}-retrain-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    overrides = [f"run.name={run_name}", f"data.uri={data_uri}", "registry.enabled=false"]  # promote() registers
    if warm_start is not None and config.retrain.iterations:
        overrides.append(f"train.iterations={config.retrain.iterations}")
    run_config = load_config(args.config, args.overrides + overrides)
    print(f"training {run_name} from {origin}")
    result = train(run_config, args.backend, data_uri, manifest, warm_start)
    tags = {"dataset_version": manifest.version, "data_uri": data_uri, "retrain.warm_start": origin}
    if result.mlflow_run_id:
        run_id = result.mlflow_run_id
        RunLogger(uri, run_id).set_tags({**tags, **source_tags("pipeline/retrain.py"), RUN_KIND_TAG: "retrain"})
    else:  # the local backend does not track: the retrain run holds the model and the decision
        _, run_id = start_run(run_config, {**tags, "checkpoint_uri": result.checkpoint},
                              entry_point="pipeline/retrain.py", kind="retrain", dataset=(data_uri, manifest))
        RunLogger(uri, run_id).finish()
    num_samples = config.retrain.eval_num_samples or config.eval.num_samples
    workers = 0 if args.backend == "local" else None  # Ray: the cluster the training ran on
    report = evaluate_model(result.checkpoint, num_samples, config.eval.seed, tracking_uri=uri,
                            data_uri=data_uri, workers=workers)
    decision = promote(run_config, uri, run_id, result.checkpoint, report, manifest.version,
                       version_tags={CONFIG_TAG: digest}, workers=workers)
    champion = decision.challenger_version if decision.promoted else decision.champion_version
    print(f"{'promoted' if decision.promoted else 'kept'}: {decision.reason}")
    print(f"  challenger: models:/{name}/{decision.challenger_version}, champion: models:/{name}/{champion}")
    if args.json:
        write_json(args.json, {**outcome, "decision": "promoted" if decision.promoted else "kept", "reason": decision.reason,
                               "run_name": run_name, "run_id": run_id, "warm_start": origin,
                               **{k: v for k, v in decision.__dict__.items() if k != "reason"}})
    return 0 if args.exit_zero else decision.exit_code


if __name__ == "__main__":
    run_main(main, user_errors())
