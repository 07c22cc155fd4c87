"""Soak test: the embedded default (`pipeline/train.py`: Ray, 2 workers, MLflow on sqlite, checkpoints every
1000 steps) for N minutes, recording memory and throughput over time, with a bounded-growth check.

    python benchmarks/soak.py [--minutes 30] [--interval-s 15] [--config pipeline/configs/toy.yaml]
        [--max-growth 0.25] [--json benchmarks/results/soak_toy.json] [key=value ...]

Memory = resident set size summed over the driver and every Ray process of the run (found by the run's own
RAY_TMPDIR), sampled every ``--interval-s``. Throughput = steps per second between samples, read from the
step the driver's progress bar reports. Growth check: the mean memory of the last quarter of the samples may
exceed that of the second quarter (after warm-up) by at most ``--max-growth`` (a fraction); the same for the
throughput's fall. Prints a table, writes JSON, exits 1 when a check fails.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tqdm import tqdm  # noqa: E402

from benchmarks.common import format_table, save_report, utc_timestamp  # noqa: E402
from infra.local.processes import run_processes  # noqa: E402
from pipeline.cli import Parser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"train \S+:\s+\d+%\|[^|]*\|\s*(\d+)/\d+")


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def last_step(log: Path) -> int:
    text = log.read_text(errors="replace")[-20_000:].replace("\r", "\n")
    steps = PROGRESS.findall(text)
    return int(steps[-1]) if steps else 0


def quarter_means(values: list[float]) -> tuple[float, float]:
    """Means of the second and the last quarter of ``values``."""
    n = len(values)
    q = max(n // 4, 1)
    return statistics.fmean(values[q : 2 * q] or values), statistics.fmean(values[-q:])


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="benchmarks/soak.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to train (default: %(default)s)")
    parser.add_argument("--interval-s", type=float, default=15.0, help="sampling interval (default: %(default)s)")
    parser.add_argument("--config", default="pipeline/configs/toy.yaml", help="training config (default: %(default)s)")
    parser.add_argument("--max-growth", type=float, default=0.25,
                        help="allowed memory growth / throughput fall, last vs second quarter (default: %(default)s)")
    parser.add_argument("--json", help="output JSON (default: benchmarks/results/soak_CONFIG.json)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides")
    args = parser.parse_intermixed_args(argv)
    if args.minutes <= 0 or args.interval_s <= 0:
        parser.error("--minutes and --interval-s must be > 0")

    with tempfile.TemporaryDirectory(prefix="soak-") as work:
        work_dir = Path(work)
        ray_tmp = work_dir / "ray"
        ray_tmp.mkdir()
        log = work_dir / "train.err"
        command = [sys.executable, "pipeline/train.py", "--config", args.config, "train.iterations=100000000",
                   f"train.time_budget_s={args.minutes * 60}", f"run.output_dir={work_dir}", "run.name=soak",
                   "train.checkpoint_every=1000", *args.overrides, "--summary", str(work_dir / "summary.json")]
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_TMPDIR": str(ray_tmp)}
        env.pop("RAY_ADDRESS", None)
        load_before = os.getloadavg()[0]
        start = time.monotonic()
        samples = []
        with log.open("w") as err, (work_dir / "train.out").open("w") as out:
            proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True)
        bar = tqdm(total=round(args.minutes * 60), desc="soak", unit="s")
        previous = None
        while proc.poll() is None:
            time.sleep(args.interval_s)
            now, step = time.monotonic() - start, last_step(log)
            sample = {"t_s": round(now, 1), "step": step, "rss_mib": round(rss_mib(run_processes(f"RAY_TMPDIR={ray_tmp}")), 1)}
            if previous and step > previous["step"]:
                sample["steps_per_s"] = round((step - previous["step"]) / (now - previous["t_s"]), 3)
            samples.append(sample)
            if step:
                previous = sample
            bar.n = min(round(now), bar.total)
            bar.set_postfix(step=step, rss=f"{sample['rss_mib']:.0f}MiB")
        bar.close()
        if proc.returncode != 0:
            print(f"error: the soak run failed (exit {proc.returncode}):\n{log.read_text()[-3000:]}", file=sys.stderr)
            return 1
    training = [s for s in samples if "steps_per_s" in s]
    memory = [s["rss_mib"] for s in training]
    speed = [s["steps_per_s"] for s in training]
    if len(training) < 4:
        print("error: too few samples while training; use a longer --minutes or a shorter --interval-s",
              file=sys.stderr)
        return 1
    mem_early, mem_late = quarter_means(memory)
    speed_early, speed_late = quarter_means(speed)
    checks = {
        "memory_growth": round(mem_late / mem_early - 1, 4),
        "throughput_fall": round(1 - speed_late / speed_early, 4),
    }
    passed = checks["memory_growth"] <= args.max_growth and checks["throughput_fall"] <= args.max_growth
    rows = [[f"{s['t_s'] / 60:.1f}", s["step"], s["rss_mib"], s.get("steps_per_s")]
            for s in samples[:: max(len(samples) // 20, 1)]]
    print(format_table(["minute", "step", "RSS MiB (all run processes)", "steps/s"], rows))
    print(f"memory: {mem_early:.0f} MiB (2nd quarter) -> {mem_late:.0f} MiB (last quarter), growth "
          f"{checks['memory_growth']:+.1%}; throughput {speed_early:.2f} -> {speed_late:.2f} steps/s, fall "
          f"{checks['throughput_fall']:+.1%}; bound {args.max_growth:.0%}: {'PASS' if passed else 'FAIL'}")
    report = {"benchmark": "soak", "config": args.config, "minutes": args.minutes, "overrides": args.overrides,
              "finished_utc": utc_timestamp(), "load_average_1m_before": load_before,
              "load_average_1m_after": os.getloadavg()[0], "cpu_count": os.cpu_count(),
              "memory_mib_quarters": [mem_early, mem_late], "steps_per_s_quarters": [speed_early, speed_late],
              "checks": checks, "max_growth": args.max_growth, "passed": passed, "samples": samples}
    save_report(report, args.json, "soak", args.config)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
