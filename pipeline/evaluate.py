"""Evaluate a trained model with the fixed protocol of training-time evaluation (docs/algorithm.md §9, §15).

    python pipeline/evaluate.py --model runs/digits/checkpoints/step_00002000.pt
    python pipeline/evaluate.py --model digits --num-samples 1000 --json eval.json      # a run name
    python pipeline/evaluate.py --model s3://bucket/ckpt/digits/checkpoint_2026-01-01_00-00-00.000000
    python pipeline/evaluate.py --model models:/cdrl-digits@champion --log-to new

The protocol is the checkpoint's ``eval`` settings: N = ``eval.num_samples`` samples (``--num-samples``),
noise seeded by ``eval.seed`` (``--seed``) per block of ``generation.batch_size``, the same sampler, and
for images the Fréchet distance of ``eval.extractor`` features to the dataset version's reference
statistics (``DATA_URI/stats/EXTRACTOR.npz``, computed once). Generation is spread over Ray tasks under
``ray job submit`` (RAY_ADDRESS set) or with ``--workers W``; the samples, and so the scores, do not depend
on the worker count. The JSON report holds every metric, the primary one, the dataset version and the protocol.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo root, not pipeline/ (see train.py)

import torch  # noqa: E402

from cdrl.config import Config, ConfigError  # noqa: E402
from pipeline.cli import Parser, run_main, write_json  # noqa: E402


def primary_metric(metrics: dict[str, float], fid_name: str | None) -> dict:
    """The one number a model is judged by: FID for images, in-support for 8squares, MMD for other toys."""
    if fid_name:
        return {"name": fid_name, "value": metrics[fid_name], "higher_is_better": False}
    if "eval/in_support" in metrics:
        return {"name": "eval/in_support", "value": metrics["eval/in_support"], "higher_is_better": True}
    if "eval/mmd_bw1" in metrics:
        return {"name": "eval/mmd_bw1", "value": metrics["eval/mmd_bw1"], "higher_is_better": False}
    return {"name": "eval/sample_nan_fraction", "value": metrics["eval/sample_nan_fraction"], "higher_is_better": False}


def ray_workers(requested: int | None, num_blocks: int, device: str = "cpu") -> int:
    """How many Ray tasks draw samples. ``requested`` None: the CPUs (GPUs) of the cluster at RAY_ADDRESS (set
    inside ``ray job submit``), else 0 (this process); ``requested`` W: W tasks on the running cluster
    (``ray start``) or on a local one started for them. Never more tasks than blocks; 1 task is no task."""
    if requested == 0 or num_blocks < 2 or (requested is None and not os.environ.get("RAY_ADDRESS")):
        return 0
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    available = int(ray.cluster_resources().get("GPU" if device.startswith("cuda") else "CPU", 1))
    workers = min(requested or available, num_blocks)
    return workers if workers >= 2 else 0


def gather_shares_on_ray(checkpoint: dict, workers: int, num_samples: int | None, seed: int | None,
                         device: str) -> list:
    """Each of ``workers`` Ray tasks (a GPU each for ``device`` cuda) draws its blocks and extracts features;
    the shares in rank order."""
    import ray
    from tqdm import tqdm

    from pipeline.evaluation import checkpoint_share

    task = ray.remote(num_cpus=1, num_gpus=1 if device.startswith("cuda") else 0)(checkpoint_share)
    shared = ray.put(checkpoint)
    pending = {task.remote(shared, rank, workers, num_samples, seed, device): rank for rank in range(workers)}
    shares: dict[int, object] = {}
    with tqdm(total=workers, desc=f"evaluation on {workers} Ray workers", unit="worker") as progress:
        waiting = list(pending)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            shares[pending[done[0]]] = ray.get(done[0])
            progress.update(1)
    return [shares[rank] for rank in range(workers)]


def dataset_of(config: Config, data_uri: str | None):
    """(uri, manifest) of the data the model was trained on (built-in data prepared once if missing)."""
    if data_uri:
        from pipeline.datasets.reader import validate_dataset

        return data_uri, validate_dataset(data_uri)
    from pipeline.run_data import dataset_for_run

    return dataset_for_run(config)


def evaluate_model(ref: str, num_samples: int | None = None, seed: int | None = None, *, tracking_uri: str | None = None,
                   workers: int | None = None, device: str | None = None, data_uri: str | None = None,
                   out_dir: str | Path | None = None, ood: bool = False) -> dict:
    """Evaluate the model ``ref`` names (see pipeline/model_ref.py) and return the JSON-able report.

    ``num_samples`` / ``seed`` default to the checkpoint's ``eval.num_samples`` / ``eval.seed``; ``workers``
    None uses a running Ray cluster if there is one; ``out_dir`` receives the sample grid or scatter plot.
    ``ood`` (8×8 digits models): adds ``ood/auroc_{clean,summed}/SET``, held-out digits vs each OOD set
    of cdrl.metrics.ood.
    """
    from cdrl.factory import build_levels, nets_from_checkpoint
    from pipeline.checkpoints import read_checkpoint
    from pipeline.evaluation import Evaluator
    from pipeline.model_ref import resolve_checkpoint
    from pipeline.reference_stats import dataset_reference

    start = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    resolved = resolve_checkpoint(ref, tracking_uri)
    checkpoint = read_checkpoint(resolved)
    config, nets, data_shape = nets_from_checkpoint(checkpoint, device)
    uri, manifest = dataset_of(config, data_uri)
    if tuple(manifest.item_shape) != tuple(data_shape):
        raise ConfigError(f"{uri}: items of shape {list(manifest.item_shape)}, the model makes {list(data_shape)}")
    evaluator = Evaluator(config, data_shape, reference=dataset_reference(uri, manifest), device=device,
                          num_samples=num_samples, seed=seed, progress=True)
    protocol = evaluator.protocol
    reference = evaluator.reference()  # before sampling: a missing or stale file is computed first
    levels = build_levels(config, device)
    world = ray_workers(workers, protocol.num_blocks, device)
    sampling_start = time.perf_counter()
    if world:
        evaluator.world_size = world
        shares = gather_shares_on_ray(checkpoint, world, protocol.num_samples, protocol.seed, device)
    else:
        shares = [evaluator.share(nets, levels)]
    metrics, artifacts = evaluator.finish(shares, nets["energy_net"], levels, out_dir, "evaluate", sampling_start)
    if ood:
        metrics.update(ood_metrics(nets["energy_net"], levels, data_shape, device))
    return {
        "model": ref,
        "checkpoint": resolved,
        "run_name": config.run.name,
        "step": int(checkpoint["trainer"]["step"]),
        "metrics": metrics,
        "primary_metric": primary_metric(metrics, protocol.fid_name),
        "dataset_version": manifest.version,
        "data_uri": uri,
        "protocol": {**protocol.describe(),
                     "extractor_fingerprint": evaluator.extractor.fingerprint if evaluator.extractor else None,
                     "reference_stats": reference.describe() if reference is not None else None},
        "workers": world or 1,
        "device": device,
        "artifacts": {k: str(v) for k, v in artifacts.items()},
        "seconds": time.perf_counter() - start,
    }


def ood_metrics(energy_net, levels, data_shape: tuple[int, ...], device: str) -> dict[str, float]:
    """AUROC of the digits classifier's held-out digits vs the named OOD sets (cdrl.metrics.ood)."""
    from cdrl.metrics.digits_classifier import digits_split
    from cdrl.metrics.ood import ood_report

    if tuple(data_shape) != (1, 8, 8):
        raise ConfigError(f"--ood needs a model of 8×8 digits, this one makes items of shape {list(data_shape)}")
    held_out = torch.from_numpy(digits_split()["held_out_x"]).to(device)
    return ood_report(energy_net, held_out, levels)


def log_report(report: dict, log_to: str, tracking_uri: str | None, experiment: str) -> dict:
    """Log the report's metrics (at the checkpoint's step), protocol and files to MLflow run ``log_to`` or a new run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from pipeline.tracking import check_reachable

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('runs').absolute() / 'mlflow.db'}"
    check_reachable(uri)
    client = MlflowClient(uri)
    if log_to == "new":
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run_id = client.create_run(experiment_id, run_name=f"evaluate-{report['run_name']}",
                                   tags={"cdrl.evaluation_of": report["model"], "checkpoint_uri": report["checkpoint"],
                                         "dataset_version": report["dataset_version"]}).info.run_id
        params = [Param(f"eval.{k}", str(v)[:500]) for k, v in report["protocol"].items() if k != "reference_stats"]
        client.log_batch(run_id, params=params)
    else:
        run_id = client.get_run(log_to).info.run_id  # raises naming the run id when it does not exist
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, report["step"]) for k, v in report["metrics"].items()])
    for path in report["artifacts"].values():
        if path.endswith(".png"):
            client.log_artifact(run_id, path, artifact_path=f"images/evaluate_step_{report['step']:08d}")
    if log_to == "new":
        client.set_terminated(run_id)
    return {"tracking_uri": uri, "run_id": run_id}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(prog="pipeline/evaluate.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="REF",
                        help="checkpoint file or folder (local or s3://), a run name, or models:/NAME@ALIAS")
    parser.add_argument("--num-samples", type=int, metavar="N",
                        help="samples to draw (default: the checkpoint's eval.num_samples)")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="seed of the sampling noise (default: the checkpoint's eval.seed)")
    parser.add_argument("--json", metavar="OUT", help="write the report here")
    parser.add_argument("--log-to", metavar="RUN_ID|new", help="log the metrics to this MLflow run, or to a new run")
    parser.add_argument("--tracking-uri",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else runs/mlflow.db)")
    parser.add_argument("--experiment", default="cdrl", help="MLflow experiment of a new run (default: %(default)s)")
    parser.add_argument("--workers", type=int, metavar="W",
                        help="Ray tasks that draw samples, on the running cluster or a local one (default: the CPUs of "
                             "the cluster at $RAY_ADDRESS if set, else 0: this process)")
    parser.add_argument("--data-uri", help="the dataset the model was trained on (default: the checkpoint's data.uri)")
    parser.add_argument("--out-dir", default="runs/evaluate", help="where the sample grid goes (default: %(default)s)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--ood", action="store_true",
                        help="digits models: also AUROC of held-out digits vs uniform noise, inverted and rotated "
                             "digits and 8×8 grayscale patches (ood/auroc_clean/SET, ood/auroc_summed/SET)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.num_samples is not None and args.num_samples < 2:
        raise ConfigError(f"--num-samples must be >= 2, got {args.num_samples}")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    report = evaluate_model(args.model, args.num_samples, args.seed, tracking_uri=args.tracking_uri,
                            workers=args.workers, device=args.device, data_uri=args.data_uri, out_dir=args.out_dir,
                            ood=args.ood)
    if args.log_to:
        report["mlflow"] = log_report(report, args.log_to, args.tracking_uri, args.experiment)
    primary = report["primary_metric"]
    print(f"\n{report['model']} (step {report['step']}, {report['checkpoint']})")
    for key, value in report["metrics"].items():
        print(f"  {key}: {value:.4g}")
    better = "higher" if primary["higher_is_better"] else "lower"
    print(f"  primary: {primary['name']} = {primary['value']:.4g} ({better} is better)")
    if args.json:
        write_json(args.json, report)
        print(f"  report: {args.json}")
    return 0


if __name__ == "__main__":
    from mlflow.exceptions import MlflowException

    from pipeline.datasets.errors import DatasetError
    from pipeline.storage import StorageError
    from pipeline.model_ref import ModelRefError
    from pipeline.tracking import TrackingError

    run_main(main, (ConfigError, ModelRefError, DatasetError, StorageError, TrackingError, FileNotFoundError,
                    ValueError, MlflowException))
