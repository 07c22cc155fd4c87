"""Digits-FID of ``digits.yaml`` against training time: train in-process, evaluate with the pipeline's protocol.

    python benchmarks/digits_fid.py                                  # 600 s of training, FID every 250 steps
    python benchmarks/digits_fid.py --budget-s 900 --eval-every 500 --json out.json
    python benchmarks/digits_fid.py --config pipeline/configs/digits.yaml train.batch_size=64

Training runs pipeline/loop.py's ``run_training`` (one process, the local backend's loop) on the built-in
digits shards until ``--budget-s`` seconds of training time (``train.time_budget_s``); every
``--eval-every`` steps (``eval.every``) and at the end it evaluates exactly as training-time evaluation does
(pipeline/evaluation.py: ``eval.num_samples`` EMA samples, seeded blocks, digits-classifier features, the
dataset version's reference statistics). Training time excludes evaluation time, which is reported as
samples/s. Also reported: the digits classifier's held-out accuracy and the FID of N real digits (the
floor a perfect model would reach at this N). Prints a table and writes JSON (benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository root, not benchmarks/

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    BenchmarkError, format_table, machine_info, save_report, setup_torch, utc_timestamp, warn_if_busy,
)
from cdrl.config import ConfigError, load_config  # noqa: E402
from cdrl.metrics.features import extract_features  # noqa: E402
from pipeline.cli import REPO_ROOT, run_main  # noqa: E402
from pipeline.evaluation import Evaluator, evaluate_trainer, fid  # noqa: E402
from pipeline.local_backend import load_training_data  # noqa: E402
from pipeline.loop import LoopHooks, WorkerContext, run_training  # noqa: E402
from pipeline.reference_stats import dataset_reference  # noqa: E402
from pipeline.run_data import dataset_for_run  # noqa: E402

DEFAULT_CONFIG = REPO_ROOT / "pipeline" / "configs" / "digits.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/digits_fid.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config of a digits run (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    parser.add_argument("--budget-s", type=float, default=600.0, help="training seconds (default: %(default)s)")
    parser.add_argument("--eval-every", type=int, default=250, help="training steps between evaluations (default: %(default)s)")
    parser.add_argument("--output-dir", default="runs/benchmarks",
                        help="where the digits shards and their reference statistics go (default: %(default)s)")
    parser.add_argument("--json", metavar="OUT", help="results file (default: benchmarks/results/digits_fid_CONFIG.json)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_intermixed_args(argv)
    if args.budget_s <= 0 or args.eval_every <= 0:
        parser.error("--budget-s and --eval-every must be > 0")
    return args


class TimedEvaluations:
    """The loop's evaluate hook: evaluates and records the training time so far (evaluation time excluded)."""

    def __init__(self, evaluator: Evaluator, out_dir: Path) -> None:
        self.evaluator, self.out_dir = evaluator, out_dir
        self.start = time.perf_counter()
        self.paused = 0.0  # seconds spent evaluating
        self.curve: list[dict] = []

    def __call__(self, step: int, trainer, final: bool) -> None:
        train_s = time.perf_counter() - self.start - self.paused
        began = time.perf_counter()
        metrics, _ = evaluate_trainer(self.evaluator, trainer, self.out_dir, step, final)
        self.paused += time.perf_counter() - began
        point = {"train_s": train_s, "iterations": step, **metrics}
        self.curve.append(point)
        name = self.evaluator.protocol.fid_name
        print(f"train {train_s:7.1f}s  it {step:6d}  {name} {point[name]:.4g}  (eval {metrics['eval/cost_s']:.1f}s, "
              f"{metrics['eval/samples_per_s']:.1f} samples/s)", flush=True)


def real_digits_floor(evaluator: Evaluator, num_samples: int, seed: int) -> float:
    """FID of ``num_samples`` real digits (drawn with ``seed``) against the reference: a perfect model's score."""
    from cdrl.data.images import load_digits

    images, _ = load_digits()
    pick = np.random.default_rng(seed).choice(len(images), size=min(num_samples, len(images)), replace=False)
    reference = evaluator.reference()
    return fid(extract_features(evaluator.extractor, images[pick]), reference.mu, reference.sigma)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = setup_torch("cpu", args.threads)
    config = load_config(args.config, [*args.overrides, f"run.output_dir={args.output_dir}",
                                       f"train.time_budget_s={args.budget_s}", "train.iterations=100000000",
                                       f"eval.every={args.eval_every}", "train.checkpoint_every=0",
                                       "tracking.enabled=false"])
    if config.data.name != "digits":
        raise BenchmarkError(f"{args.config}: data.name is {config.data.name!r}; this benchmark is for digits")
    machine = machine_info(device)
    warn_if_busy(machine)
    data_uri, manifest = dataset_for_run(config)
    data = load_training_data(data_uri)
    evaluator = Evaluator(config, data.item_shape, reference=dataset_reference(data_uri, manifest), device=device)
    if evaluator.extractor is None or evaluator.extractor.name != "digits":
        raise BenchmarkError("eval.extractor must be digits (or auto) for this benchmark")
    evaluator.reference()  # reference statistics before the clock starts
    out_dir = Path(args.output_dir).absolute() / "digits_fid"
    timer = TimedEvaluations(evaluator, out_dir)
    result = run_training(config, data, WorkerContext(device=device), LoopHooks(evaluate=timer))
    name = evaluator.protocol.fid_name
    report = {
        "benchmark": "digits_fid",
        "timestamp": utc_timestamp(),
        "config": args.config,
        "overrides": args.overrides,
        "seed": config.run.seed,
        "settings": {"budget_s": args.budget_s, "eval_every": args.eval_every,
                     **evaluator.protocol.describe(), "batch_size": config.train.batch_size,
                     "langevin_steps": config.langevin.num_steps},
        "metric": name,
        "classifier_held_out_accuracy": evaluator.extractor.classifier.held_out_accuracy,
        "real_digits_fid": real_digits_floor(evaluator, evaluator.protocol.num_samples, seed=1),
        "train_seconds": result.train_seconds,
        "iterations": result.trainer.step_count,
        "final_fid": timer.curve[-1][name],
        "best_fid": min(p[name] for p in timer.curve),
        "eval_samples_per_s": float(np.median([p["eval/samples_per_s"] for p in timer.curve])),
        "dataset_version": manifest.version,
        "curve": timer.curve,
        "machine": machine,
    }
    print("\n" + " ".join(["digits_fid", report["config"], *report["overrides"], f"seed {report['seed']}"]))
    rows = [[p["train_s"], p["iterations"], p[name], p["eval/cost_s"], p["eval/samples_per_s"]] for p in timer.curve]
    print(format_table(["train s", "iterations", name, "eval s", "samples/s"], rows))
    print(f"real digits at N={evaluator.protocol.num_samples}: {report['real_digits_fid']:.4g}; classifier held-out "
          f"accuracy {report['classifier_held_out_accuracy']:.4f}; evaluation {report['eval_samples_per_s']:.1f} samples/s")
    save_report(report, args.json, "digits_fid", args.config)
    return 0


if __name__ == "__main__":
    run_main(main, (ConfigError, BenchmarkError, FileNotFoundError, FloatingPointError))
