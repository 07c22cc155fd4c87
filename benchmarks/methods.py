"""Every training method on the 8-squares toy and on 8×8 digits under the same wall-clock budget.

    python benchmarks/methods.py                                   # 60 s per run, seeds 0 1, both datasets
    python benchmarks/methods.py --budget-s 300 --seeds 0 1 2 --datasets toy --json out.json
    python benchmarks/methods.py --methods cdrl dsm --tracking-uri sqlite:///runs/mlflow.db

Each (dataset, method, seed) trains in this process with pipeline/loop.py (the local backend's loop) for
``--budget-s`` seconds of training time (``train.time_budget_s``; evaluation excluded), then evaluates with
the pipeline's protocol (pipeline/evaluation.py): toy metrics against fresh points, digits-FID (the digits
classifier's features against the dataset's reference statistics). Reported per run: the metrics, the
iterations reached, sampling samples/s, and failures (a non-finite loss = divergence, or NaN samples).
Every run is one MLflow run in one experiment (``--experiment``). Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository root, not benchmarks/

import numpy as np  # noqa: E402

from benchmarks.common import format_table, machine_info, save_report, setup_torch, utc_timestamp, warn_if_busy  # noqa: E402
from cdrl.config import flatten, load_config  # noqa: E402
from pipeline.cli import REPO_ROOT, run_main  # noqa: E402

CONFIGS = REPO_ROOT / "pipeline" / "configs"
TOY_CONFIGS = {"cdrl": "toy", "drl": "drl", "mcmc": "mcmc", "mcmc_short_run": "mcmc_short_run",
               "learned_sampler": "learned_sampler", "exact_sm": "exact_sm", "sliced_sm": "sliced_sm", "dsm": "dsm",
               "multiscale_dsm": "multiscale_dsm"}
# digits.yaml plus, per method, what the toy configs' method sections become at the digits' scale ([-1, 1], 64-d).
DIGITS_OVERRIDES = {
    "cdrl": [],
    "drl": ["method=drl", "langevin.num_steps=30"],
    "mcmc": ["method=mcmc", "mcmc.init_range=1.0", "mcmc.step_size=1.0", "mcmc.noise_std=0.01", "mcmc.num_steps=20",
             "mcmc.sample_steps=60"],
    "mcmc_short_run": ["method=mcmc", "mcmc.persistent=false", "mcmc.init_range=1.0", "mcmc.step_size=1.0",
                       "mcmc.noise_std=0.01", "mcmc.num_steps=40", "mcmc.sample_steps=40"],
    "learned_sampler": ["method=learned_sampler", "learned_sampler.latent_dim=16", "learned_sampler.hidden=256",
                        "learned_sampler.output_std=0.05"],
    "exact_sm": ["method=exact_sm"],  # refused: 64 dimensions (cdrl.objectives.score_matching.EXACT_MAX_DIMS)
    "sliced_sm": ["method=sliced_sm", "score_matching.init_range=1.0", "score_matching.sample_step_size=2e-4",
                  "score_matching.sample_steps=200"],
    "dsm": ["method=dsm", "score_matching.noise_std=0.1", "score_matching.init_range=1.0",
            "score_matching.sample_step_size=2e-4", "score_matching.sample_steps=200"],
    "multiscale_dsm": ["method=multiscale_dsm", "score_matching.sigma_max=1.0", "score_matching.sigma_min=0.01",
                       "score_matching.sample_step_size=2e-5", "score_matching.sample_steps=200"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/methods.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=60.0, help="training seconds per run (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="run seeds (default: %(default)s)")
    parser.add_argument("--datasets", nargs="+", choices=["toy", "digits"], default=["toy", "digits"])
    parser.add_argument("--methods", nargs="+", choices=list(TOY_CONFIGS), default=list(TOY_CONFIGS))
    parser.add_argument("--toy-samples", type=int, default=2000, help="evaluation samples on the toy (default: %(default)s)")
    parser.add_argument("--digits-samples", type=int, default=500, help="evaluation samples on digits (default: %(default)s)")
    parser.add_argument("--output-dir", default="runs/benchmarks/methods", help="run folders (default: %(default)s)")
    parser.add_argument("--tracking-uri", help="MLflow (default: sqlite under --output-dir)")
    parser.add_argument("--experiment", default="methods-benchmark", help="MLflow experiment (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--json", metavar="OUT", help="results file (default: benchmarks/results/methods_compare.json)")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error("--budget-s must be > 0")
    return args


def run_config(dataset: str, method: str, seed: int, args: argparse.Namespace, stamp: str):
    common = [f"run.seed={seed}", f"train.time_budget_s={args.budget_s}", "train.iterations=1000000",
              "train.checkpoint_every=0", "eval.every=0", "eval.plot=false", f"run.name={dataset}-{method}-s{seed}",
              f"run.output_dir={Path(args.output_dir).absolute() / stamp}"]
    if dataset == "toy":
        return load_config(CONFIGS / f"{TOY_CONFIGS[method]}.yaml",
                           [*common, f"eval.num_samples={args.toy_samples}", "train.log_every=10"])
    return load_config(CONFIGS / "digits.yaml", [*DIGITS_OVERRIDES[method], *common,
                                                 f"eval.num_samples={args.digits_samples}", "train.log_every=5"])


def train_and_evaluate(config) -> dict:
    """One run: the local backend's training and evaluation; failures reported, not raised."""
    from pipeline.local_backend import train_locally
    from pipeline.run_data import dataset_for_run

    start = time.perf_counter()
    try:
        summary = train_locally(config, *dataset_for_run(config))
    except (FloatingPointError, ValueError) as err:
        return {"failure": f"{type(err).__name__}: {str(err).splitlines()[0][:160]}", "wall_s": time.perf_counter() - start}
    metrics = summary.metrics
    failure = "NaN samples" if metrics.get("sample_nan_fraction", 0) > 0.5 else None
    return {"failure": failure, "step": summary.step, "train_seconds": summary.train_seconds,
            "metrics": metrics, "wall_s": time.perf_counter() - start}


def log_to_mlflow(client, experiment_id: str, config, result: dict) -> str:
    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, run_name=config.run.name,
                            tags={"method": config.method, "dataset": config.data.name, "failure": str(result["failure"])})
    params = [Param(k, str(v)[:500]) for k, v in flatten(config.to_dict()).items()]
    now = int(time.time() * 1000)
    metrics = [Metric(k.replace("/", "_") if k.startswith("fid/") else k, float(v), now, result.get("step", 0))
               for k, v in result.get("metrics", {}).items() if np.isfinite(v)]
    metrics.append(Metric("failed", float(result["failure"] is not None), now, 0))
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i:i + 100])
    client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id, "FAILED" if result["failure"] else "FINISHED")
    return run.info.run_id


def quality_of(dataset: str, metrics: dict) -> dict:
    if dataset == "toy":
        return {"in_support": metrics.get("in_support"), "balance": metrics.get("balance"), "mmd_bw1": metrics.get("mmd_bw1")}
    fid_key = next((k for k in metrics if k.startswith("fid/")), None)
    return {"digits_fid": metrics.get(fid_key) if fid_key else None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = setup_torch("cpu", args.threads)
    machine = machine_info(device)
    warn_if_busy(machine)
    from mlflow import MlflowClient

    out = Path(args.output_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(args.tracking_uri or f"sqlite:///{out / 'mlflow.db'}")
    found = client.get_experiment_by_name(args.experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(args.experiment)
    stamp = utc_timestamp().replace(":", "-")
    runs, rows = [], []
    for dataset in args.datasets:
        for method in args.methods:
            for seed in args.seeds:
                config = run_config(dataset, method, seed, args, stamp)
                print(f"== {dataset} {method} seed {seed}", flush=True)
                result = train_and_evaluate(config)
                result.update(dataset=dataset, method=method, seed=seed,
                              mlflow_run_id=log_to_mlflow(client, experiment_id, config, result))
                result["quality"] = quality_of(dataset, result.get("metrics", {}))
                result["sampling_samples_per_s"] = result.get("metrics", {}).get("samples_per_s")
                runs.append(result)
                rows.append([dataset, method, seed, result.get("step"), *result["quality"].values(),
                             result["sampling_samples_per_s"], result["failure"] or "-"])
                print(f"   {result['quality']} failure={result['failure']}", flush=True)
    headers = ["dataset", "method", "seed", "iterations", "quality…", "", "", "sampling/s", "failure"]
    print(format_table(headers[:len(rows[0])] if rows else headers, [r + [""] * (len(headers) - len(r)) for r in rows]))
    report = {"benchmark": "methods", "timestamp": utc_timestamp(), "budget_s": args.budget_s, "seeds": args.seeds,
              "datasets": args.datasets, "methods": args.methods, "toy_samples": args.toy_samples,
              "digits_samples": args.digits_samples, "mlflow": {"tracking_uri": client.tracking_uri if hasattr(client, "tracking_uri") else None,
                                                                 "experiment": args.experiment},
              "runs": runs, "machine": machine, "load_average_after": __import__("os").getloadavg()[0]}
    save_report(report, args.json, "methods", "compare")
    return 0


if __name__ == "__main__":
    from benchmarks.common import BenchmarkError
    from cdrl.config import ConfigError

    run_main(main, (BenchmarkError, ConfigError))
