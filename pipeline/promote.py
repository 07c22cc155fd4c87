"""Register an evaluated model as the challenger and promote it to champion if it beats the champion.

    python pipeline/evaluate.py --model toy-nightly --json challenger.json
    python pipeline/promote.py --config pipeline/configs/toy.yaml run.name=toy-nightly --report challenger.json

The last step of the Kubeflow pipeline (infra/kubeflow/) and of ``pipeline/retrain.py``: the checkpoint named in
the evaluation report (``--report``, written by ``pipeline/evaluate.py --json``) becomes a new version of
``registry.model_name`` with alias ``challenger``, logged to the MLflow run ``run.name`` (created if missing);
the champion is scored with the report's protocol (samples, seed) on the report's dataset version, and
``champion`` moves only if the primary metric improves by at least ``retrain.min_improvement``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo root, not pipeline/ (see train.py)

from cdrl.config import ConfigError, load_config  # noqa: E402
from pipeline.cli import Parser, run_main, write_json  # noqa: E402
from pipeline.promotion import EXIT_CODES_HELP  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(prog="pipeline/promote.py", description=__doc__, epilog=EXIT_CODES_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config of the model (registry, retrain, tracking)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. run.name=…")
    parser.add_argument("--report", required=True, metavar="REPORT.json", help="pipeline/evaluate.py --json output")
    parser.add_argument("--json", metavar="OUT", help="write the decision here")
    parser.add_argument("--exit-zero", action="store_true", help="exit 0 when promoted or kept (see exit codes)")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    from pipeline.datasets.reader import load_manifest
    from pipeline.promotion import promote
    from pipeline.registry import CONFIG_TAG, config_digest
    from pipeline.tracking import RunLogger, start_run

    args = parse_args(argv)
    config = load_config(args.config, args.overrides)
    try:
        report = json.loads(Path(args.report).read_text())
        missing = {"checkpoint", "primary_metric", "protocol", "dataset_version", "data_uri"} - set(report)
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"--report {args.report}: unreadable evaluation report ({err})") from None
    if missing:
        raise ConfigError(f"--report {args.report}: not a pipeline/evaluate.py report (no {', '.join(sorted(missing))})")
    manifest = load_manifest(report["data_uri"])
    uri, run_id = start_run(config, {"dataset_version": report["dataset_version"], "data_uri": report["data_uri"],
                                     "checkpoint_uri": report["checkpoint"]},
                            entry_point="pipeline/promote.py", dataset=(report["data_uri"], manifest))
    RunLogger(uri, run_id).finish()
    decision = promote(config, uri, run_id, report["checkpoint"], report, report["dataset_version"],
                       version_tags={CONFIG_TAG: config_digest(config)})
    print(f"{'promoted' if decision.promoted else 'kept'}: {decision.reason}")
    if args.json:
        write_json(args.json, {"decision": "promoted" if decision.promoted else "kept", **decision.__dict__})
    return 0 if args.exit_zero else decision.exit_code


if __name__ == "__main__":
    from pipeline.datasets.errors import DatasetError
    from pipeline.storage import StorageError
    from pipeline.model_ref import ModelRefError  # registry.RegistryError is one
    from pipeline.tracking import TrackingError

    run_main(main, (ConfigError, DatasetError, StorageError, TrackingError, ModelRefError))
