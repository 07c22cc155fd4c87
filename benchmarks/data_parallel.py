"""Data-parallel efficiency of Ray Train: 1 worker vs N workers at the same global batch.

    python benchmarks/data_parallel.py [--config pipeline/configs/toy.yaml] [--workers 1 2] [--iterations 1000]
        [--json benchmarks/results/data_parallel_toy.json] [key=value ...]

Each row is one `pipeline/train.py` run (Ray backend, MLflow off) in a subprocess; its training seconds are
the time spent in training steps (Ray start-up, data loading and evaluation excluded). The local backend
(one process, no Ray, torch's default threads) is reported as a reference row. Efficiency of N workers =
(seconds with 1 worker / seconds with N workers) / N.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from pipeline.cli import write_json

REPO = Path(__file__).resolve().parents[1]


def run(config: str, iterations: int, overrides: list[str], backend: str, workers: int, out: Path) -> dict:
    summary = out / f"summary-{backend}-{workers}.json"
    command = [sys.executable, "pipeline/train.py", "--config", config, "--backend", backend, *overrides,
               f"train.iterations={iterations}", f"run.name=dp-{backend}-{workers}", f"run.output_dir={out}",
               "tracking.enabled=false", "train.checkpoint_every=0", "eval.num_samples=1000", "eval.plot=false",
               f"ray.num_workers={workers}", "--summary", str(summary)]
    print(f"running {backend} with {workers} worker(s)…", flush=True)
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    if proc.returncode != 0:
        sys.exit(f"error: {backend} run with {workers} worker(s) failed:\n{proc.stderr[-3000:]}")
    result = json.loads(summary.read_text())
    seconds = result["train_seconds"]
    return {"backend": backend, "workers": workers, "iterations": result["step"], "train_seconds": seconds,
            "seconds_per_iteration": seconds / result["step"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="pipeline/configs/toy.yaml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--json", default=str(REPO / "benchmarks/results/data_parallel_toy.json"))
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(args.config, args.iterations, args.overrides, "local", 1, Path(tmp))]
        rows += [run(args.config, args.iterations, args.overrides, "ray", n, Path(tmp)) for n in args.workers]
    single = next(r for r in rows if r["backend"] == "ray" and r["workers"] == 1)
    for row in rows:
        row["speedup_vs_1_worker"] = single["train_seconds"] / row["train_seconds"]
        row["efficiency"] = row["speedup_vs_1_worker"] / row["workers"] if row["backend"] == "ray" else None
    print(f"\n{'backend':8} {'workers':>7} {'s/iter':>8} {'speedup':>8} {'efficiency':>10}")
    for row in rows:
        efficiency = f"{row['efficiency']:.2f}" if row["efficiency"] is not None else "-"
        print(f"{row['backend']:8} {row['workers']:>7} {row['seconds_per_iteration']:>8.4f} "
              f"{row['speedup_vs_1_worker']:>8.2f} {efficiency:>10}")
    payload = {"benchmark": "data_parallel", "timestamp": datetime.now(timezone.utc).isoformat(),
               "config": args.config, "overrides": args.overrides, "iterations": args.iterations,
               "cpu_count": os.cpu_count(), "rows": rows}
    write_json(args.json, payload)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
