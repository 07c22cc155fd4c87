"""Seconds per training iteration and per generation for one config, as a fraction of this machine's limit.

    python benchmarks/step_time.py --config pipeline/configs/toy_official.yaml
    python benchmarks/step_time.py --config pipeline/configs/toy.yaml train.batch_size=1024 --threads 2
    python benchmarks/step_time.py --config pipeline/configs/cifar10.yaml --device cuda --gen-samples 500
    python benchmarks/step_time.py --config pipeline/configs/toy_official.yaml perf.autocast=off --clock cpu

Training: ``Trainer.step`` on the batches pipeline/loop.py would draw (built-in data; N(0, 1) data of the
config's item shape for datasets that need files), timed after ``--warmup`` iterations. Generation: EMA
nets, all levels, the config's Langevin steps per level and Tweedie mode, in ``generation.batch_size``
batches, timed after one warm-up generation. Analytic FLOPs per iteration and per generation are
counted from the nets (benchmarks/flops.py); float32 and bf16 matmuls measured in the same run give the
limit, so achieved FLOP/s is reported as a fraction of each ("MFU"). ``perf.*`` overrides pick the
performance switches (cdrl/perf.py). ``--clock cpu`` times process CPU seconds instead of wall seconds
(with ``--threads 1``, a load-independent measure on a shared machine).
Prints a table and writes JSON (see benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on sys.path: put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks.common import (  # noqa: E402
    BenchmarkError, check_batch, format_cell, format_table, machine_info, save_report, seeded_batch, setup_torch,
    summarize, timed, utc_timestamp, warn_if_busy,
)
from benchmarks.flops import count_net_macs  # noqa: E402
from cdrl.config import Config, ConfigError, load_config  # noqa: E402
from cdrl.data import BUILTIN_DATASETS, load_builtin  # noqa: E402
from cdrl.generation import generate_in_batches  # noqa: E402
from cdrl.nets import count_parameters  # noqa: E402
from cdrl.perf import apply_threads  # noqa: E402
from cdrl.training import Trainer  # noqa: E402
from pipeline.cli import run_main  # noqa: E402
from pipeline.loop import TrainingData, WorkerContext, build_worker_trainer  # noqa: E402
from pipeline.train import data_shape_for  # noqa: E402

MATMUL_REPEATS = 10
DEFAULT_MATMUL_SIZE = {"cpu": 1024, "cuda": 8192}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/step_time.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config, e.g. pipeline/configs/toy_official.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    parser.add_argument("--json", metavar="OUT",
                        help="results file (default: benchmarks/results/step_time_CONFIG.json)")
    parser.add_argument("--iters", type=int, default=20, help="timed training iterations (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up iterations (default: %(default)s)")
    parser.add_argument("--gen-samples", type=int, default=2500, help="samples per generation (default: %(default)s)")
    parser.add_argument("--gen-repeats", type=int, default=2, help="timed generations (default: %(default)s)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="(default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: perf.threads, else torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall seconds, or this process's CPU seconds (all threads) (default: %(default)s)")
    parser.add_argument("--matmul-size", type=int, help="n of the n×n matmul (default: 1024 on CPU, 8192 on CUDA)")
    args = parser.parse_intermixed_args(argv)
    for name in ("iters", "gen_samples", "gen_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def benchmark_data(config: Config, device: torch.device) -> tuple[TrainingData, str]:
    """The built-in dataset named by the config, else N(0, 1) data of its item shape; and where it came from."""
    if config.data.name in BUILTIN_DATASETS:
        x, labels = load_builtin(config.data.name, config.data.num_points, config.run.seed)
        data = TrainingData(torch.from_numpy(x), None if labels is None else torch.from_numpy(labels))
        source = f"builtin:{config.data.name}"
    else:
        generator = torch.Generator().manual_seed(config.run.seed)
        count = 2 * config.train.batch_size
        x = torch.randn(count, *data_shape_for(config), generator=generator)
        classes = config.model.num_classes
        labels = torch.randint(0, classes, (count,), generator=generator) if classes else None
        data = TrainingData(x, labels)
        source = f"synthetic N(0,1) for {config.data.name}"
    check_batch(config.train.batch_size, data, source)
    labels = None if data.labels is None else data.labels.to(device)
    return TrainingData(data.x.to(device), labels), source


def time_training(trainer: Trainer, data: TrainingData, config: Config, warmup: int, iters: int,
                  device: torch.device, clock: str = "wall") -> tuple[list[float], list[float]]:
    """(warm-up seconds, timed seconds) per ``Trainer.step``; batches are drawn outside the timing."""
    sampler = torch.Generator(device="cpu")
    seconds: list[float] = []
    for step in tqdm(range(warmup + iters), desc="train steps", unit="it", mininterval=2.0):
        x, labels = seeded_batch(data, config.run.seed, step, config.train.batch_size, sampler)
        seconds.append(timed(lambda: trainer.step(x, labels), device, clock)[1])
    return seconds[:warmup], seconds[warmup:]


def time_generation(trainer: Trainer, config: Config, data_shape: tuple[int, ...], num_samples: int, repeats: int,
                    device: torch.device, clock: str = "wall") -> tuple[float, list[float]]:
    """(warm-up seconds, timed seconds) per generation of ``num_samples`` from the EMA nets."""
    energy_net, initializer = trainer.averaged("energy_net"), trainer.averaged("initializer")
    gen = config.generation

    def generate() -> None:
        generate_in_batches(energy_net, initializer, trainer.objective.levels, num_samples, data_shape,
                            steps_per_level(config), gen.batch_size, tweedie=gen.tweedie, device=device,
                            perf=trainer.perf)

    seconds = [timed(generate, device, clock)[1] for _ in tqdm(range(1 + repeats), desc="generations", unit="gen")]
    return seconds[0], seconds[1:]


def steps_per_level(config: Config) -> int:
    return config.generation.steps_per_level or config.langevin.num_steps


def matmul_speed(device: torch.device, size: int, dtype: torch.dtype = torch.float32,
                 clock: str = "wall") -> dict[str, float]:
    """Median time of an n×n matmul in ``dtype`` (after one warm-up) and the GFLOP/s it implies (2n³ flops)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    timed(lambda: a @ b, device, clock)
    median_s = statistics.median(timed(lambda: a @ b, device, clock)[1] for _ in range(MATMUL_REPEATS))
    return {"size": size, "dtype": str(dtype).replace("torch.", ""), "repeats": MATMUL_REPEATS, "median_s": median_s,
            "gflops": 2 * size**3 / median_s / 1e9}


def peak_host_gib() -> float:
    """Peak resident memory of this process so far (GiB; Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def utilization(flops: float, seconds: float, matmuls: dict[str, dict]) -> dict[str, float]:
    """Achieved GFLOP/s and its fraction of each measured matmul throughput."""
    achieved = flops / seconds / 1e9
    return {"achieved_gflops": achieved, **{f"fraction_of_{k}": achieved / v["gflops"] for k, v in matmuls.items()}}


def peak_cuda_gib(device: torch.device) -> float | None:
    """Peak CUDA memory (GiB) since the start or the last call, then reset; None on the CPU."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def run_benchmark(args: argparse.Namespace) -> dict:
    config = load_config(args.config, args.overrides)
    apply_threads(config.perf)
    device = setup_torch(args.device, args.threads)
    machine = machine_info(device)
    warn_if_busy(machine)
    data, source = benchmark_data(config, device)
    trainer = build_worker_trainer(config, data.item_shape, WorkerContext(device=device))
    clock = args.clock
    warmup_s, train_s = time_training(trainer, data, config, args.warmup, args.iters, device, clock)
    train_peak, train_host_peak = peak_cuda_gib(device), peak_host_gib()
    gen_warmup_s, gen_s = time_generation(trainer, config, data.item_shape, args.gen_samples, args.gen_repeats,
                                          device, clock)
    gen_peak, gen_host_peak = peak_cuda_gib(device), peak_host_gib()
    size = args.matmul_size or DEFAULT_MATMUL_SIZE[device.type]
    matmuls = {name: matmul_speed(device, size, dtype, clock)
               for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    train, generation = summarize(train_s), summarize(gen_s)
    macs = count_net_macs(trainer.nets["energy_net"], trainer.nets["initializer"], data.item_shape,
                          config.model.num_classes, device)
    distinct_rows = config.schedule.num_levels * (config.model.num_classes + 1)
    train_flops = macs.train_flops(config.train.batch_size, config.langevin.num_steps, distinct_rows)
    gen_flops = macs.generation_flops(args.gen_samples, config.schedule.num_levels, steps_per_level(config),
                                      config.generation.tweedie != "none")
    return {
        "benchmark": "step_time",
        "timestamp": utc_timestamp(),
        "config": args.config,
        "overrides": args.overrides,
        "settings": {
            "device": str(device),
            "iters": args.iters,
            "warmup": args.warmup,
            "gen_samples": args.gen_samples,
            "gen_repeats": args.gen_repeats,
            "batch_size": config.train.batch_size,
            "langevin_steps": config.langevin.num_steps,
            "num_levels": config.schedule.num_levels,
            "steps_per_level": steps_per_level(config),
            "generation_batch_size": config.generation.batch_size,
            "tweedie": config.generation.tweedie,
        },
        "data": {"source": source, "item_shape": list(data.item_shape), "labels": data.labels is not None},
        "param_counts": {name: count_parameters(net) for name, net in trainer.nets.items()},
        "train_step_s": {**train, "first": warmup_s[0] if warmup_s else None, "warmup": warmup_s, "all": train_s},
        "train_samples_per_s": config.train.batch_size / train["median"],
        "generation_s": {**generation, "warmup": gen_warmup_s, "all": gen_s},
        "generation_samples_per_s": args.gen_samples / generation["median"],
        "matmul": matmuls["fp32"],
        "matmul_bf16": matmuls["bf16"],
        "normalized": {
            "train_step_matmul_gflop": train["median"] * matmuls["fp32"]["gflops"],
            "generation_matmul_gflop": generation["median"] * matmuls["fp32"]["gflops"],
        },
        "flops": {"macs_per_example": macs.as_dict(), "train_step": train_flops, "generation": gen_flops,
                  "formula": "benchmarks/flops.py"},
        "utilization": {"train": utilization(train_flops, train["median"], matmuls),
                        "generation": utilization(gen_flops, generation["median"], matmuls)},
        "perf": trainer.perf.summary(),
        "clock": clock,
        "cuda_peak_memory_gib": {"train": train_peak, "generation": gen_peak},
        "host_peak_memory_gib": {"train": train_host_peak, "generation": gen_host_peak},
        "machine": machine,
    }


def print_report(report: dict) -> None:
    s, train, gen, mm = report["settings"], report["train_step_s"], report["generation_s"], report["matmul"]
    mm16, util, flops = report["matmul_bf16"], report["utilization"], report["flops"]
    machine = report["machine"]
    where = machine.get("cuda_device_name") or f"{machine['cpu_model']}, {machine['torch_threads']} threads"
    print("\n" + " ".join(["step_time", report["config"], *report["overrides"]]))
    print(f"device {s['device']} ({where}), torch {machine['torch_version']}, "
          f"load average before the run {format_cell(machine['load_average_1m'])}, {report['clock']} clock")
    print("perf: " + ", ".join(f"{k}={format_cell(v)}" for k, v in report["perf"].items()))
    tweedie = " + Tweedie" if s["tweedie"] != "none" else ""
    rows = [
        [f"train step (batch {s['batch_size']}, {s['langevin_steps']} Langevin)", train["median"], train["mean"],
         train["p90"], train["count"], train["first"]],
        [f"generation ({s['gen_samples']} samples, {s['num_levels']}×{s['steps_per_level']} steps{tweedie})",
         gen["median"], gen["mean"], gen["p90"], gen["count"], gen["warmup"]],
        [f"matmul {mm['size']}² float32", mm["median_s"], None, None, mm["repeats"], None],
        [f"matmul {mm16['size']}² bfloat16", mm16["median_s"], None, None, mm16["repeats"], None],
    ]
    print(format_table(["seconds", "median", "mean", "p90", "n", "first"], rows))
    print(f"matmul: {mm['gflops']:.1f} GFLOP/s float32, {mm16['gflops']:.1f} GFLOP/s bfloat16")
    rows = [[name, flops[key] / 1e9, util[name]["achieved_gflops"], util[name]["fraction_of_fp32"],
             util[name]["fraction_of_bf16"], peak]
            for name, key, peak in (("train", "train_step", report["host_peak_memory_gib"]["train"]),
                                    ("generation", "generation", report["host_peak_memory_gib"]["generation"]))]
    print(format_table(["per median", "GFLOP", "GFLOP/s", "of fp32 peak", "of bf16 peak", "host peak GiB"], rows))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_benchmark(args)
    print_report(report)
    save_report(report, args.json, "step_time", args.config)
    return 0


if __name__ == "__main__":
    run_main(main, (ConfigError, BenchmarkError, FileNotFoundError, FloatingPointError))
