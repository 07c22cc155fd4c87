"""Training time to a quality bar on a 2-D toy: train in-process, evaluate EMA samples every N seconds.

    python benchmarks/toy_quality.py
    python benchmarks/toy_quality.py --config pipeline/configs/toy.yaml train.batch_size=1024 --seed 1
    python benchmarks/toy_quality.py --budget-s 300 --bar "in_support>=0.85,balance<=0.03"

Training uses pipeline/loop.py's trainer, batch drawing and per-step seeds (step_seed) on the built-in
toy data (``data.num_points`` points drawn with ``run.seed``), so a seed gives the same weights after k
steps on every run. ``train.iterations`` is ignored: ``--budget-s`` seconds of training time decide.
Training time counts only the training steps. Every ``--eval-every-s`` seconds of it (and at the end),
``--num-samples`` EMA samples are compared with held-out true points (toy_report); evaluation time is
reported separately. Prints a line per evaluation, then a table, and writes JSON (see benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on sys.path: put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    BenchmarkError, check_batch, format_table, machine_info, save_report, seeded_batch, setup_torch, synchronize,
    utc_timestamp, warn_if_busy,
)
from cdrl.config import Config, ConfigError, load_config  # noqa: E402
from cdrl.data import TOY_DISTRIBUTIONS, sample_toy  # noqa: E402
from cdrl.generation import generate_in_batches  # noqa: E402
from cdrl.metrics.toy import mmd_key, toy_report  # noqa: E402
from cdrl.training import Trainer  # noqa: E402
from pipeline.cli import REPO_ROOT, run_main  # noqa: E402
from pipeline.evaluation import HELD_OUT_SEED_OFFSET, held_out_reference  # noqa: E402
from pipeline.metric_conditions import EXPECTED, MetricCondition, parse_condition  # noqa: E402
from pipeline.loop import TrainingData, WorkerContext, build_worker_trainer, step_seed  # noqa: E402

DEFAULT_CONFIG = REPO_ROOT / "pipeline" / "configs" / "toy.yaml"
DEFAULT_BAR = "in_support>=0.90,balance<=0.03,mmd_bw1<=0.001"


def parse_bar(text: str) -> list[MetricCondition]:
    """``"in_support>=0.90,balance<=0.03"`` → conditions; raises BenchmarkError on a malformed clause."""
    conditions = []
    for clause in text.split(","):
        condition = parse_condition(clause)
        if condition is None:
            raise BenchmarkError(f"--bar: cannot read {clause!r} (expected {EXPECTED})")
        conditions.append(condition)
    return conditions


def report_bandwidths(bar: list[MetricCondition]) -> tuple[float, ...]:
    """MMD bandwidths to compute: 1 always, plus any ``mmd_bw{h}`` the bar names."""
    named = {float(c.metric.removeprefix("mmd_bw")) for c in bar if re.fullmatch(r"mmd_bw[\d.]+", c.metric)}
    return tuple(sorted({1.0} | named))


def check_bar(bar: list[MetricCondition], distribution: str, bandwidths: tuple[float, ...]) -> None:
    """Every metric the bar names must be one that toy_report computes for this distribution."""
    known = {mmd_key(h) for h in bandwidths} | ({"in_support", "balance"} if distribution == "8squares" else set())
    unknown = sorted({c.metric for c in bar} - known)
    if unknown:
        raise BenchmarkError(f"--bar names {', '.join(unknown)}, not reported for {distribution} "
                             f"(reported: {', '.join(sorted(known))})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/toy_quality.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config of a 2-D toy (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    parser.add_argument("--seed", type=int, help="run seed (default: the config's run.seed)")
    parser.add_argument("--budget-s", type=float, default=600.0, help="training seconds (default: %(default)s)")
    parser.add_argument("--eval-every-s", type=float, default=30.0, help="training seconds between evaluations "
                        "(default: %(default)s)")
    parser.add_argument("--num-samples", type=int, default=10_000,
                        help="EMA samples per evaluation (default: %(default)s)")
    parser.add_argument("--bar", default=DEFAULT_BAR, help="comma-separated conditions that must all hold "
                        "(default: %(default)s)")
    parser.add_argument("--json", metavar="OUT",
                        help="results file (default: benchmarks/results/toy_quality_CONFIG.json)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="(default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_intermixed_args(argv)
    if args.budget_s <= 0 or args.eval_every_s <= 0:
        parser.error("--budget-s and --eval-every-s must be > 0")
    if args.num_samples < 2:
        parser.error("--num-samples must be >= 2 (unbiased MMD)")
    return args


def load_toy_config(args: argparse.Namespace) -> Config:
    overrides = args.overrides + ([f"run.seed={args.seed}"] if args.seed is not None else [])
    config = load_config(args.config, overrides)
    if config.data.name not in TOY_DISTRIBUTIONS:
        raise ConfigError(f"data.name: toy_quality needs a 2-D toy ({', '.join(TOY_DISTRIBUTIONS)}), "
                          f"got {config.data.name!r}")
    return config


def toy_training_data(config: Config, device: torch.device) -> TrainingData:
    """The built-in toy's ``data.num_points`` training points drawn with seed ``run.seed``."""
    points = sample_toy(config.data.name, config.data.num_points, config.run.seed)
    data = TrainingData(torch.from_numpy(points).to(device))
    check_batch(config.train.batch_size, data, config.data.name)
    return data


@dataclass
class Evaluator:
    """EMA samples of the current trainer against fixed held-out points, with toy_report."""

    config: Config
    reference: np.ndarray
    num_samples: int
    bandwidths: tuple[float, ...]
    device: torch.device

    def __call__(self, trainer: Trainer) -> dict[str, float]:
        """Metrics of ``num_samples`` EMA samples; their noise is seeded from (run.seed, step), so reproducible."""
        torch.manual_seed(step_seed(self.config.run.seed + HELD_OUT_SEED_OFFSET, 0, trainer.step_count))
        gen = self.config.generation
        samples, _ = generate_in_batches(
            trainer.averaged("energy_net"), trainer.averaged("initializer"), trainer.objective.levels,
            self.num_samples, (2,), gen.steps_per_level or self.config.langevin.num_steps, gen.batch_size,
            tweedie=gen.tweedie, device=self.device,
        )
        return toy_report(samples.numpy(), self.reference, self.bandwidths, distribution=self.config.data.name)


def train_step_seconds(trainer: Trainer, data: TrainingData, config: Config, sampler: torch.Generator,
                       device: torch.device) -> float:
    """Seconds of one training iteration, its batch drawn and seeded as pipeline/loop.py does (included)."""
    start = time.perf_counter()
    x, labels = seeded_batch(data, config.run.seed, trainer.step_count, config.train.batch_size, sampler)
    trainer.step(x, labels)
    synchronize(device)
    return time.perf_counter() - start


def train_and_evaluate(trainer: Trainer, data: TrainingData, config: Config, evaluate: Evaluator,
                       bar: list[MetricCondition], budget_s: float, eval_every_s: float, device: torch.device) -> list[dict]:
    """Train for ``budget_s`` training seconds; evaluate every ``eval_every_s`` of them and at the end."""
    sampler = torch.Generator(device="cpu")
    train_s, next_eval, curve = 0.0, eval_every_s, []
    while train_s < budget_s:
        train_s += train_step_seconds(trainer, data, config, sampler, device)
        if train_s >= next_eval or train_s >= budget_s:
            curve.append(evaluation_point(trainer, evaluate, bar, train_s))
            print_point(curve[-1])
            next_eval = (train_s // eval_every_s + 1) * eval_every_s
    return curve


def evaluation_point(trainer: Trainer, evaluate: Evaluator, bar: list[MetricCondition], train_s: float) -> dict:
    start = time.perf_counter()
    metrics = evaluate(trainer)
    eval_s = time.perf_counter() - start
    return {"train_s": train_s, "iterations": trainer.step_count, "eval_s": eval_s, **metrics,
            "bar_met": all(c.holds(metrics) for c in bar)}


def metric_names(point: dict) -> list[str]:
    return [k for k in point if k not in ("train_s", "iterations", "eval_s", "bar_met")]


def print_point(point: dict) -> None:
    metrics = "  ".join(f"{k} {point[k]:.4g}" for k in metric_names(point))
    print(f"train {point['train_s']:7.1f}s  it {point['iterations']:6d}  {metrics}  "
          f"(eval {point['eval_s']:.1f}s){'  BAR MET' if point['bar_met'] else ''}", flush=True)


def build_report(args: argparse.Namespace, config: Config, bar: list[MetricCondition], curve: list[dict],
                 device: torch.device, machine: dict) -> dict:
    first = next((p for p in curve if p["bar_met"]), None)
    last = curve[-1]
    return {
        "benchmark": "toy_quality",
        "timestamp": utc_timestamp(),
        "config": args.config,
        "overrides": args.overrides,
        "seed": config.run.seed,
        "settings": {
            "device": str(device),
            "budget_s": args.budget_s,
            "eval_every_s": args.eval_every_s,
            "num_samples": args.num_samples,
            "bar": ",".join(map(str, bar)),
            "batch_size": config.train.batch_size,
            "langevin_steps": config.langevin.num_steps,
            "generation_batch_size": config.generation.batch_size,
        },
        "seconds_to_bar": first["train_s"] if first else None,
        "iterations_to_bar": first["iterations"] if first else None,
        "train_seconds": last["train_s"],
        "eval_seconds": sum(p["eval_s"] for p in curve),
        "iterations": last["iterations"],
        "mean_step_s": last["train_s"] / last["iterations"],
        "final": {k: last[k] for k in metric_names(last)},
        "curve": curve,
        "machine": machine,
    }


def print_report(report: dict) -> None:
    curve = report["curve"]
    names = metric_names(curve[-1])
    rows = [[p["train_s"], p["iterations"], *(p[k] for k in names), p["bar_met"]] for p in curve]
    print("\n" + " ".join(["toy_quality", report["config"], *report["overrides"], f"seed {report['seed']}"]))
    print(format_table(["train s", "iterations", *names, "bar"], rows))
    to_bar = report["seconds_to_bar"]
    reached = f"{to_bar:.1f}s ({report['iterations_to_bar']} iterations)" if to_bar is not None else "never"
    print(f"bar {report['settings']['bar']}: {reached}; trained {report['train_seconds']:.1f}s "
          f"({report['mean_step_s']:.4f} s/it), evaluated {report['eval_seconds']:.1f}s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = setup_torch(args.device, args.threads)
    config = load_toy_config(args)
    bar = parse_bar(args.bar)
    bandwidths = report_bandwidths(bar)
    check_bar(bar, config.data.name, bandwidths)
    machine = machine_info(device)
    warn_if_busy(machine)
    data = toy_training_data(config, device)
    trainer = build_worker_trainer(config, data.item_shape, WorkerContext(device=device))
    evaluate = Evaluator(config, held_out_reference(config, args.num_samples), args.num_samples, bandwidths, device)
    curve = train_and_evaluate(trainer, data, config, evaluate, bar, args.budget_s, args.eval_every_s, device)
    report = build_report(args, config, bar, curve, device, machine)
    print_report(report)
    save_report(report, args.json, "toy_quality", args.config)
    return 0


if __name__ == "__main__":
    run_main(main, (ConfigError, BenchmarkError, FileNotFoundError, FloatingPointError))
