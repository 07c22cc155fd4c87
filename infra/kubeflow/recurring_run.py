"""Schedule the compiled retrain pipeline as a Kubeflow recurring run (every Monday 03:00 UTC by default).

    .venv-kfp/bin/python infra/kubeflow/cdrl_pipeline.py --out cdrl_pipeline.yaml
    .venv-kfp/bin/python infra/kubeflow/recurring_run.py --host http://127.0.0.1:8080 --pipeline cdrl_pipeline.yaml \
        --param data_uri=s3://acme-cdrl/data/cifar10 --param storage_path=s3://acme-cdrl/checkpoints

KFP cron expressions have six fields, seconds first. ``max_concurrency=1``: a retrain never overlaps the previous
one; ``no_catchup``: runs missed while the schedule was paused are not replayed.
"""
import argparse

import yaml


def parse_param(text: str) -> tuple[str, object]:
    name, _, raw = text.partition("=")
    if not name or not _:
        raise argparse.ArgumentTypeError(f"--param {text!r} must look like name=value")
    return name, yaml.safe_load(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://127.0.0.1:8080 (port-forwarded)")
    parser.add_argument("--pipeline", required=True, help="compiled pipeline YAML (cdrl_pipeline.py --out)")
    parser.add_argument("--cron", default="0 0 3 * * 1", help="6-field cron, seconds first (default: %(default)s)")
    parser.add_argument("--experiment", default="cdrl", help="KFP experiment (default: %(default)s)")
    parser.add_argument("--name", default="cdrl-retrain-weekly", help="recurring run name (default: %(default)s)")
    parser.add_argument("--param", type=parse_param, action="append", default=[], metavar="NAME=VALUE",
                        help="pipeline parameter (repeatable), e.g. data_uri=s3://BUCKET/data/cifar10")
    args = parser.parse_args()

    from kfp import Client

    client = Client(host=args.host)
    experiment = client.create_experiment(args.experiment)  # returns the existing one when it exists
    job = client.create_recurring_run(experiment_id=experiment.experiment_id, job_name=args.name,
                                      cron_expression=args.cron, max_concurrency=1, no_catchup=True,
                                      pipeline_package_path=args.pipeline, params=dict(args.param))
    print(f"recurring run {job.display_name} ({job.recurring_run_id}): {args.cron}")


if __name__ == "__main__":
    main()
