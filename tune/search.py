"""Search schedules, Langevin settings and learning rates with Ray Tune; every trial tracked in MLflow.

    python tune/search.py --space tune/spaces/toy.yaml --num-samples 12 --max-concurrent 2 --name toy-search
    python tune/search.py --config pipeline/configs/digits.yaml --space tune/spaces/digits.yaml --name digits-search
    python tune/search.py --space tune/spaces/toy.yaml --storage s3://BUCKET/tune --name toy-s3 ray.num_workers=4

Each trial is one pipeline/train.py run on Ray Train (a TorchTrainer fitted inside a Tune function trainable) of
the base config (--config and key=value overrides) with the trial-only overrides and the sampled parameters of
the space file, trained for --budget-s seconds of training. Every eval_every_s training seconds the trial
evaluates its EMA nets and reports the space's metric; ASHA (time = training seconds) stops the worst trials
early. MLflow gets one parent run for the search and one nested child run per trial; the best trial's config
is written as a ready-to-use YAML (--best-out) and logged to the parent. Re-running with the same --name
resumes the search from its storage (finished trials are kept, interrupted ones resume from their last
checkpoint). Bad input (an unknown key in the space, an empty range, impossible resources) stops with one
`error:` line and exit code 2.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

# Run as a script, Python puts tune/ first on sys.path: put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import yaml  # noqa: E402

from cdrl.config import Config, ConfigError, config_from_dict, load_config  # noqa: E402
from pipeline.cli import REPO_ROOT, Parser, run_main, write_json  # noqa: E402
from tune.space import OBJECTIVE, TIME_ATTR, SearchError, SearchSpace, load_space, space_summary, with_values  # noqa: E402

DEFAULT_CONFIG = REPO_ROOT / "pipeline" / "configs" / "toy.yaml"
TRIAL_DRIVER_CPU = 0.1  # the trial function only drives its TorchTrainer; {"CPU": 0} is rejected by Tune
DATA_READ_CPU = 1.0  # Ray Data's read tasks ask for one CPU each
INPUTS_FILE = "search_inputs.json"
INTERRUPTED_EXIT = 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(prog="tune/search.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="base YAML config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the base config")
    parser.add_argument("--space", required=True, metavar="SPACE.yaml", help="search space (see tune/spaces/)")
    parser.add_argument("--num-samples", type=int, default=8, help="trials to sample; with grid values, samples per "
                        "grid point (default: %(default)s)")
    parser.add_argument("--max-concurrent", type=int, default=2, help="trials running at once (default: %(default)s)")
    parser.add_argument("--budget-s", type=float, help="training seconds per trial (default: the space's budget_s)")
    parser.add_argument("--name", help="search name: its storage folder, MLflow parent run and resume key "
                        "(default: search-SPACE)")
    parser.add_argument("--storage", help="where Tune and the trials' Ray Train runs keep their state: a folder or "
                        "s3://bucket/prefix (default: run.output_dir/tune)")
    parser.add_argument("--best-out", metavar="BEST.yaml", help="best trial's config, ready for pipeline/train.py "
                        "--config (default: STORAGE/NAME/best.yaml for local storage, else ./NAME-best.yaml)")
    parser.add_argument("--metric", help="override the space's metric (e.g. eval/fid/inception_5000)")
    parser.add_argument("--mode", choices=["max", "min"], help="override the space's mode")
    parser.add_argument("--ray-address", default="auto", help="auto: join the cluster named by RAY_ADDRESS, else start "
                        "a local one; local: always start a local one; or a cluster address (default: %(default)s)")
    parser.add_argument("--summary", metavar="OUT.json", help="write the search summary (trials, best) here")
    args = parser.parse_intermixed_args(argv)
    if args.num_samples < 1:
        parser.error("--num-samples must be >= 1")
    if args.max_concurrent < 1:
        parser.error("--max-concurrent must be >= 1")
    return args


# ------------------------------------------------------------------------------------------------ inputs
def absolute(path: str | None) -> str | None:
    if path is None or path.startswith("s3://"):
        return path
    return str(Path(path).absolute())


def resolve_base(config: Config) -> dict[str, Any]:
    """The trials' base config: every path absolute (trials run in Tune's trial folders), the data prepared
    once here, the tracking URI fixed (a default sqlite file would otherwise differ per trial)."""
    from pipeline.run_data import dataset_for_run
    from pipeline.tracking import tracking_uri

    data_uri, _ = dataset_for_run(config)
    return with_values(config.to_dict(), {
        "run.output_dir": absolute(config.run.output_dir),
        "data.uri": absolute(data_uri),
        "tracking.uri": tracking_uri(config) if config.tracking.enabled else config.tracking.uri,
    })


def inputs_fingerprint(base: dict[str, Any], space: SearchSpace, num_samples: int) -> dict[str, Any]:
    payload = {"base_config": base, "space": space_summary(space), "num_samples": num_samples}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return {"sha256": digest, **payload}


def check_same_inputs(experiment_path: str, inputs: dict[str, Any], name: str) -> bool:
    """True when a search of this name exists (with the same inputs); a different one is an error."""
    from pipeline import storage

    uri = storage.join(experiment_path, INPUTS_FILE)
    if not storage.exists(uri):
        return False
    stored = json.loads(storage.read_bytes(uri))
    if stored["sha256"] != inputs["sha256"]:
        changed = [k for k in ("base_config", "space", "num_samples") if stored.get(k) != json.loads(json.dumps(inputs[k], default=str))]
        raise SearchError(f"search {name!r} at {experiment_path} was started with a different "
                          f"{' and '.join(changed) or 'input'}: rerun it unchanged to resume, or pick another --name")
    return True


def trial_resources(base: Config) -> dict[str, float]:
    workers = base.ray.num_workers
    return {"CPU": TRIAL_DRIVER_CPU + workers * base.ray.cpus_per_worker, "GPU": float(workers if base.ray.use_gpu else 0)}


def local_machine() -> dict[str, float]:
    """What a local Ray started here would have: this process's CPUs and the visible GPUs."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"CPU": float(cpus), "GPU": float(torch.cuda.device_count())}


def check_resources(needed: dict[str, float], max_concurrent: int, have: dict[str, float]) -> None:
    """On a local Ray (no autoscaler), a trial that cannot fit is an error, and so is a concurrency that leaves
    no CPU for Ray Data's read tasks (every trial would wait on its data forever)."""
    cpus, gpus = have["CPU"], have["GPU"]
    if needed["GPU"] > gpus:
        raise SearchError(f"impossible resources: a trial needs {needed['GPU']:g} GPU (ray.use_gpu with "
                          f"ray.num_workers workers), this machine has {gpus:g}")
    if needed["CPU"] + DATA_READ_CPU > cpus:
        raise SearchError(f"impossible resources: a trial needs {needed['CPU']:g} CPU (ray.num_workers × "
                          f"ray.cpus_per_worker + {TRIAL_DRIVER_CPU:g}) plus {DATA_READ_CPU:g} for reading its data; "
                          f"this machine has {cpus:g}")
    fits = int((cpus - DATA_READ_CPU) // needed["CPU"] + 1e-9)
    if max_concurrent > fits:
        raise SearchError(f"impossible resources: --max-concurrent {max_concurrent} trials need "
                          f"{max_concurrent * needed['CPU']:g} CPU plus {DATA_READ_CPU:g} for data reads; this machine "
                          f"has {cpus:g} (use --max-concurrent {fits} or fewer ray.cpus_per_worker)")


def connect_ray(address: str, needed: dict[str, float], max_concurrent: int) -> None:
    """``auto``: join the cluster named by RAY_ADDRESS (`ray job submit` sets it; its autoscaler decides what
    fits), else start a local Ray; ``local``: always start a local Ray; anything else: that cluster's address.
    Before starting a local Ray, check that the trials fit this machine."""
    import ray

    os.environ.pop("MLFLOW_RUN_ID", None)  # trials inherit the environment; their runs must nest under the parent
    if address == "auto" and os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    if address not in ("auto", "local"):
        try:
            ray.init(address=address, log_to_driver=True)
            return
        except ConnectionError as err:
            raise SearchError(f"--ray-address {address}: no Ray cluster answers there ({err})") from None
    check_resources(needed, max_concurrent, local_machine())
    # Ray Train's PlacementGroupCleaner frees the workers of a trial that Tune stops early through the State API,
    # which finds "the" local cluster by scanning for Ray processes and fails when other clusters run on this
    # machine; the leaked worker bundles then starve the next trials' data reads. Name our dashboard instead:
    # the raylet, and so every worker, inherits RAY_API_SERVER_ADDRESS.
    port = free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
             log_to_driver=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------------------------------------ search
def search_algorithm(space: SearchSpace, base: dict[str, Any], max_concurrent: int):
    """The searcher: Optuna, or with ``baseline: true`` a variant generator whose first point is the base
    config's own values; None leaves Tune's default random variant generator."""
    from ray.tune.search import BasicVariantGenerator

    points = [space.baseline_point(base)] if space.baseline else None  # counts as one of the num_samples
    if space.algorithm == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except (ImportError, AssertionError) as err:
            raise SearchError(f"{space.path}: algorithm 'optuna' needs `pip install optuna` ({err})") from err
        return OptunaSearch(points_to_evaluate=points)  # Tune wraps a Searcher in a ConcurrencyLimiter
    if points is None:
        return None
    # A variant generator of our own must carry the concurrency limit itself: Tune applies
    # max_concurrent_trials only to Searchers and to the generator it creates when none is given.
    return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=max_concurrent)


def build_tuner(experiment_path: str, storage_root: str, name: str, trainable, space: SearchSpace,
                num_samples: int, max_concurrent: int, callbacks: list, resume: bool, base: dict[str, Any]):
    from ray import tune
    from ray.tune.schedulers import AsyncHyperBandScheduler

    if resume:
        print(f"resuming search {name!r} from {experiment_path}")
        return tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    search_alg = search_algorithm(space, base, max_concurrent)
    scheduler = AsyncHyperBandScheduler(time_attr=TIME_ATTR, max_t=space.budget_s, grace_period=space.grace_period_s,
                                        reduction_factor=space.reduction_factor)
    return tune.Tuner(
        trainable,
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(metric=OBJECTIVE, mode=space.mode, scheduler=scheduler, search_alg=search_alg,
                                    num_samples=num_samples, max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(name=name, storage_path=storage_root, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )


def progress_callback(total: int):
    """A tqdm bar over finished trials (Tune's own table is printed as well)."""
    from ray.tune import Callback
    from tqdm import tqdm

    class TrialProgress(Callback):
        def __init__(self):
            self.bar = None

        def setup(self, **info):
            self.bar = tqdm(total=total, desc="trials", unit="trial")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.bar.update(1)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.bar.update(1)

        def on_experiment_end(self, trials, **info):
            self.bar.close()

    return TrialProgress()


def num_grid_points(space: SearchSpace) -> int:
    return math.prod(len(spec["grid"]) for spec in space.params.values() if "grid" in spec)


def trial_records(experiment_path: str, space: SearchSpace, base: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per trial: id, status, sampled params, last reported time/step/metric/objective, early stop.

    Statuses come from the saved experiment state: after an interruption the live trial objects all read
    TERMINATED, while the saved state keeps RUNNING for the trials a resume will continue."""
    from ray.tune import ExperimentAnalysis

    records = []
    for trial in ExperimentAnalysis(experiment_path).trials:
        last = trial.last_result or {}
        seconds, step = last.get(TIME_ATTR), last.get("step")
        iterations = config_from_dict(with_values(base, {**space.trial, **trial.config})).train.iterations
        early = (trial.status == "TERMINATED" and seconds is not None and seconds < space.budget_s
                 and (step or 0) < iterations)
        objective = last.get(OBJECTIVE)
        records.append({
            "trial_id": trial.trial_id, "status": trial.status, "params": dict(trial.config),
            "train_seconds": seconds, "step": int(step or 0), "metric": last.get(space.metric),
            "constraints": {str(c): last.get(c.metric) for c in space.constraints},
            "objective": objective, "early_stopped": bool(early),
        })
    return records


def trial_curves(results, space: SearchSpace) -> dict[str, list[dict[str, float]]]:
    """{trial_id: [{train_seconds, objective, metric}, …]} from every result Tune recorded for each trial."""
    curves = {}
    for result in results:
        frame = result.metrics_dataframe
        trial_id = (result.metrics or {}).get("trial_id")
        if frame is None or trial_id is None or TIME_ATTR not in frame:
            continue
        columns = [c for c in (OBJECTIVE, space.metric) if c in frame]
        curves[trial_id] = [{"train_seconds": float(row[TIME_ATTR]),
                             **{c.removeprefix("tune/"): float(row[c]) for c in columns}}
                            for _, row in frame.iterrows()]
    return curves


def best_trial(records: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """The trial with the best objective; ties go to the lowest trial id, so a resumed search (whose trials Tune
    may list in another order) names the same best trial as the run that finished it."""
    scored = sorted((r for r in records if r["objective"] is not None and math.isfinite(r["objective"])),
                    key=lambda r: r["trial_id"])
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda r: r["objective"])


def baseline_trial(records: list[dict[str, Any]], space: SearchSpace, base: dict[str, Any]) -> dict[str, Any] | None:
    """The trial that ran the base config's own values (``baseline: true`` in the space), if any."""
    if not space.baseline:
        return None
    point = space.baseline_point(base)
    return next((r for r in records if all(r["params"].get(k) == v for k, v in point.items())), None)


def versus_baseline(best: dict[str, Any] | None, baseline: dict[str, Any] | None,
                    curves: dict[str, list[dict[str, float]]], mode: str) -> dict[str, Any] | None:
    """Best trial against the baseline at the same training time: the baseline's last report (ASHA may have
    stopped it early), and the best trial's objective at that time from its curve."""
    if not best or not baseline or baseline["objective"] is None or baseline["train_seconds"] is None:
        return None
    seconds = baseline["train_seconds"]
    earlier = [p["objective"] for p in curves.get(best["trial_id"], []) if p["train_seconds"] <= seconds + 1e-6]
    best_objective = earlier[-1] if earlier else best["objective"]
    better = best_objective > baseline["objective"] if mode == "max" else best_objective < baseline["objective"]
    return {"train_seconds": seconds, "baseline_objective": baseline["objective"], "best_objective": best_objective,
            "best_beats_baseline": best["trial_id"] != baseline["trial_id"] and better}


def best_config_yaml(user_config: Config, best: dict[str, Any], name: str, space: SearchSpace) -> str:
    """The user's base config with the best trial's parameters, and its iteration count as train.iterations."""
    values = {**best["params"], "run.name": f"{name}-best", "train.iterations": max(best["step"], 1)}
    config = config_from_dict(with_values(user_config.to_dict(), values))
    header = (f"# Best trial {best['trial_id']} of Ray Tune search {name!r} ({space.path}): {space.metric} = "
              f"{best['metric']}, objective {best['objective']:.6g}\n# after {best['train_seconds']:.0f} s of training "
              f"({best['step']} iterations, taken as train.iterations). Searched: "
              f"{', '.join(f'{k}={v}' for k, v in best['params'].items())}\n")
    return header + yaml.safe_dump(config.to_dict(), sort_keys=False)


def print_table(records: list[dict[str, Any]], space: SearchSpace) -> None:
    keys = list(space.params)
    print(f"\n{'trial':<14}{'status':<12}{'early':<7}{'train s':>8}{'step':>8}{space.metric:>18}{'objective':>11}  "
          + "  ".join(keys))
    for r in records:
        metric = f"{r['metric']:.4g}" if isinstance(r["metric"], (int, float)) else "-"
        objective = f"{r['objective']:.4g}" if isinstance(r["objective"], (int, float)) else "-"
        seconds = f"{r['train_seconds']:.0f}" if r["train_seconds"] is not None else "-"
        params = "  ".join(f"{r['params'].get(k)!s:.10}" for k in keys)
        print(f"{r['trial_id']:<14}{r['status']:<12}{str(r['early_stopped']).lower():<7}{seconds:>8}{r['step']:>8}"
              f"{metric:>18}{objective:>11}  {params}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pipeline import storage

    user_config = load_config(args.config, args.overrides)
    space = load_space(args.space, user_config, args.budget_s)
    space.metric, space.mode = args.metric or space.metric, args.mode or space.mode
    name = args.name or f"search-{Path(args.space).stem}"
    if not name or "/" in name:
        raise SearchError(f"--name {name!r}: must be non-empty without '/'")
    base = resolve_base(user_config)
    storage_root = absolute(args.storage) or str(Path(base["run"]["output_dir"]) / "tune")
    experiment_path = storage.join(storage_root, name)
    inputs = inputs_fingerprint(base, space, args.num_samples)
    resuming = check_same_inputs(experiment_path, inputs, name)
    needed = trial_resources(config_from_dict(with_values(base, space.trial)))
    connect_ray(args.ray_address, needed, args.max_concurrent)
    from ray import tune

    from tune.trial import run_trial

    tracking = None
    if user_config.tracking.enabled:
        from tune.tracking import start_parent_run

        tracking = start_parent_run(config_from_dict(base), name, {**space_summary(space),
                                    "num_samples": args.num_samples, "max_concurrent": args.max_concurrent})
    resume = resuming and tune.Tuner.can_restore(experiment_path)
    if not resuming:
        storage.write_bytes(storage.join(experiment_path, INPUTS_FILE), json.dumps(inputs, indent=2, default=str).encode())
    search = {"name": name, "parent_run_id": tracking[1] if tracking else "",
              "train_storage": storage.join(experiment_path, "train")}
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=base, space=space, search=search),
                                    {"CPU": TRIAL_DRIVER_CPU})
    total = args.num_samples * num_grid_points(space)
    tuner = build_tuner(experiment_path, storage_root, name, trainable, space, args.num_samples, args.max_concurrent,
                        [progress_callback(total)], resume, base)
    results = tuner.fit()
    records = trial_records(experiment_path, space, base)
    interrupted = len(records) < total or any(r["status"] in ("PENDING", "RUNNING", "PAUSED") for r in records)
    best = best_trial(records, space.mode)
    baseline = baseline_trial(records, space, base)
    curves = trial_curves(results, space)
    if tracking:
        from tune.tracking import child_runs, close_children, finish_parent, log_search_summary

        close_children(*tracking, records, curves)
        if best:
            run = child_runs(*tracking).get(best["trial_id"])
            best["child_run_id"] = run.info.run_id if run else None
    summary = {"name": name, "storage": experiment_path, "metric": space.metric, "mode": space.mode,
               "budget_s": space.budget_s, "eval_every_s": space.eval_every_s, "num_trials": len(records),
               "num_early_stopped": sum(r["early_stopped"] for r in records),
               "num_errored": sum(r["status"] == "ERROR" for r in records), "interrupted": interrupted,
               "best": best, "baseline": baseline,
               "versus_baseline": versus_baseline(best, baseline, curves, space.mode), "trials": records,
               "mlflow": {"tracking_uri": tracking[0], "parent_run_id": tracking[1]} if tracking else None}
    print_table(records, space)
    best_yaml = best_config_yaml(user_config, best, name, space) if best and not interrupted else None
    if best_yaml is not None:
        best_out = args.best_out or (str(Path(experiment_path) / "best.yaml") if not storage.is_s3(experiment_path)
                                     else f"{name}-best.yaml")
        Path(best_out).parent.mkdir(parents=True, exist_ok=True)
        Path(best_out).write_text(best_yaml)
        summary["best_config"] = str(Path(best_out).absolute())
        print(f"\nbest trial {best['trial_id']}: {space.metric} = {best['metric']:.4g} (objective "
              f"{best['objective']:.4g}); config written to {best_out}")
        versus = summary["versus_baseline"]
        if versus:
            verdict = "beats" if versus["best_beats_baseline"] else "does not beat"
            print(f"at {versus['train_seconds']:.0f} training seconds the best trial ({versus['best_objective']:.4g}) "
                  f"{verdict} the baseline {baseline['trial_id']}, the base config's own values "
                  f"({versus['baseline_objective']:.4g})")
    if tracking:
        log_search_summary(*tracking, summary, best_yaml)
        finish_parent(*tracking, interrupted)
    if args.summary:
        write_json(args.summary, summary)
    if interrupted:
        print(f"search {name!r} interrupted: rerun the same command to resume it", file=sys.stderr)
        return INTERRUPTED_EXIT
    return 0


if __name__ == "__main__":
    from pipeline.datasets.errors import DatasetError
    from pipeline.storage import StorageError
    from pipeline.tracking import TrackingError

    run_main(main, (ConfigError, SearchError, DatasetError, StorageError, TrackingError, FileNotFoundError))
