"""This project's toy_official run against the official CDRL toy code, alternating, in one sitting.

    python benchmarks/vs_official.py --official-timed /tmp/official/timed.py            # 2 threads, wall clock
    python benchmarks/vs_official.py --official-timed T.py --threads 1 --clock cpu       # load-independent
    python benchmarks/vs_official.py --official-timed T.py --rounds 5 perf.autocast=fp32 # ours with a switch off

``--official-timed`` is a timing-only, CPU copy of the official ``toy_example.py`` (public repository
AlvinZhuyx/CDRL; keep it outside this repository): run as ``N_IT=n python T.py`` it trains n iterations and
prints one JSON line ``{"iter_s": median s/iteration after 3 warm-ups, "gen_s": median of 3 timed
2500-sample generations}``. Ours is ``benchmarks/step_time.py --config pipeline/configs/toy_official.yaml``
with the same iteration counts and CPU threads (ours with the CPU defaults of ``perf.*`` unless overridden).
Each round runs both, the order alternating between rounds; the 1-minute load average is recorded before
every run. ``--clock cpu`` makes both time process CPU seconds (the official copy's ``time.time()`` calls
become ``time.process_time()``), which with ``--threads 1`` hardly depends on other processes' load.
Prints a table of the rounds and the ratios official/ours of the medians; writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tqdm import tqdm  # noqa: E402

from benchmarks.common import (  # noqa: E402
    BenchmarkError, format_table, machine_info, save_report, setup_torch, utc_timestamp,
)
from pipeline.cli import run_main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = "pipeline/configs/toy_official.yaml"
WARMUP = 3  # the official timing copy always discards its first 3 iterations
GEN_REPEATS = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/vs_official.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-timed", required=True, metavar="PATH",
                        help="timing-only CPU copy of the official toy_example.py (outside this repository)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides for ours")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per run (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for both (default: %(default)s)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="(default: %(default)s)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for both (default: this one)")
    parser.add_argument("--json", metavar="OUT", help="results file (default: benchmarks/results/vs_official.json)")
    args = parser.parse_intermixed_args(argv)
    if not Path(args.official_timed).is_file():
        raise BenchmarkError(f"--official-timed: no such file {args.official_timed}")
    for name in ("rounds", "iters", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    return args


def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def official_script(path: str, clock: str, scratch: Path) -> Path:
    """The official timing copy, with process CPU time instead of wall time for ``--clock cpu``."""
    if clock == "wall":
        return Path(path).resolve()
    text = Path(path).read_text()
    if "time.time()" not in text:
        raise BenchmarkError(f"{path}: no time.time() calls to switch to CPU time")
    out = scratch / "official_cpu_clock.py"
    out.write_text(text.replace("time.time()", "time.process_time()"))
    return out


def run_official(script: Path, args: argparse.Namespace, scratch: Path) -> dict[str, float]:
    env = {**thread_env(args.threads), "N_IT": str(WARMUP + args.iters)}
    proc = subprocess.run([args.python, str(script)], cwd=scratch, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BenchmarkError(f"official run failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    result = json.loads(lines[-1])
    return {"iter_s": result["iter_s"], "gen_s": result["gen_s"]}


def run_ours(args: argparse.Namespace, scratch: Path) -> dict[str, float]:
    out = scratch / "ours.json"
    command = [args.python, str(REPO / "benchmarks" / "step_time.py"), "--config", CONFIG, *args.overrides,
               "--iters", str(args.iters), "--warmup", str(WARMUP), "--gen-samples", "2500",
               "--gen-repeats", str(GEN_REPEATS), "--threads", str(args.threads), "--clock", args.clock,
               "--json", str(out)]
    proc = subprocess.run(command, cwd=REPO, env=thread_env(args.threads), capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchmarkError(f"our run failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    report = json.loads(out.read_text())
    return {"iter_s": report["train_step_s"]["median"], "gen_s": report["generation_s"]["median"],
            "fraction_of_fp32_peak": report["utilization"]["train"]["fraction_of_fp32"],
            "fraction_of_bf16_peak": report["utilization"]["train"]["fraction_of_bf16"],
            "generation_fraction_of_fp32_peak": report["utilization"]["generation"]["fraction_of_fp32"],
            "generation_fraction_of_bf16_peak": report["utilization"]["generation"]["fraction_of_bf16"],
            "perf": report["perf"]}


def run_benchmark(args: argparse.Namespace) -> dict:
    machine = machine_info(setup_torch("cpu", args.threads))
    rounds = []
    with tempfile.TemporaryDirectory(prefix="vs_official_") as tmp:
        scratch = Path(tmp)
        script = official_script(args.official_timed, args.clock, scratch)
        for index in tqdm(range(args.rounds), desc="rounds", unit="round"):
            order = ["official", "ours"] if index % 2 == 0 else ["ours", "official"]
            row: dict = {"round": index + 1, "order": order}
            for who in order:
                row[f"{who}_load_1m"] = os.getloadavg()[0]
                row[who] = run_official(script, args, scratch) if who == "official" else run_ours(args, scratch)
            rounds.append(row)
    median = {who: {key: statistics.median(r[who][key] for r in rounds) for key in ("iter_s", "gen_s")}
              for who in ("official", "ours")}
    last = rounds[-1]["ours"]
    return {
        "benchmark": "vs_official",
        "timestamp": utc_timestamp(),
        "overrides": args.overrides,
        "settings": {"rounds": args.rounds, "iters": args.iters, "warmup": WARMUP, "gen_samples": 2500,
                     "gen_repeats": GEN_REPEATS, "threads": args.threads, "clock": args.clock},
        "rounds": rounds,
        "median": median,
        "speedup": {key: median["official"][key] / median["ours"][key] for key in ("iter_s", "gen_s")},
        "ours_utilization": {k: statistics.median(r["ours"][k] for r in rounds) for k in last if k != "perf"},
        "ours_perf": last["perf"],
        "load_1m": [r[f"{who}_load_1m"] for r in rounds for who in r["order"]],
        "machine": machine,
    }


def print_report(report: dict) -> None:
    s = report["settings"]
    print(f"\nvs_official: {s['rounds']} alternating rounds, {s['iters']} timed iterations, {s['threads']} threads, "
          f"{s['clock']} clock; ours: perf " + ", ".join(f"{k}={v}" for k, v in report["ours_perf"].items()))
    rows = [[r["round"], r["official"]["iter_s"], r["ours"]["iter_s"], r["official"]["gen_s"], r["ours"]["gen_s"],
             f"{r['official_load_1m']:.1f}/{r['ours_load_1m']:.1f}"] for r in report["rounds"]]
    med, up = report["median"], report["speedup"]
    rows.append(["median", med["official"]["iter_s"], med["ours"]["iter_s"], med["official"]["gen_s"],
                 med["ours"]["gen_s"], ""])
    rows.append(["official/ours", None, up["iter_s"], None, up["gen_s"], ""])
    print(format_table(["round", "official s/it", "ours s/it", "official gen s", "ours gen s", "load off/ours"], rows))
    u = report["ours_utilization"]
    print(f"ours, training: {u['fraction_of_fp32_peak']:.2f} of the fp32 matmul peak, "
          f"{u['fraction_of_bf16_peak']:.2f} of the bf16 peak; generation: {u['generation_fraction_of_fp32_peak']:.2f}"
          f" / {u['generation_fraction_of_bf16_peak']:.2f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_benchmark(args)
    print_report(report)
    save_report(report, args.json, "vs_official", "toy_official")
    return 0


if __name__ == "__main__":
    run_main(main, (BenchmarkError,))
