"""Helpers shared by the benchmark scripts: device set-up, timing, batches, machine info, tables."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from pipeline.cli import write_json
from pipeline.loop import TrainingData, step_seed

RESULTS_DIR = Path(__file__).resolve().parent / "results"
T = TypeVar("T")


class BenchmarkError(Exception):
    """A benchmark that cannot run as asked (reported in one line, exit status 2)."""


def setup_torch(device_name: str, threads: int | None) -> torch.device:
    """The requested device (CUDA must exist if asked for) with ``threads`` intra-op CPU threads if given."""
    if threads is not None:
        torch.set_num_threads(threads)
    if device_name == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(device_name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # cpu: this process's CPU seconds, all threads


def timed(fn: Callable[[], T], device: torch.device, clock: str = "wall") -> tuple[T, float]:
    """(fn(), seconds on ``clock``), with the device synchronised before and after on CUDA."""
    now = CLOCKS[clock]
    synchronize(device)
    start = now()
    result = fn()
    synchronize(device)
    return result, now() - start


def summarize(seconds: list[float]) -> dict[str, float]:
    """Median, mean, 90th percentile, min and max of a list of timings (seconds)."""
    return {
        "median": statistics.median(seconds),
        "mean": statistics.fmean(seconds),
        "p90": float(np.percentile(seconds, 90)),
        "min": min(seconds),
        "max": max(seconds),
        "count": len(seconds),
    }


def check_batch(batch: int, data: TrainingData, source: str) -> None:
    """pipeline/loop.py's rule: the batch must fit in the data."""
    if batch > len(data.x):
        raise BenchmarkError(f"train.batch_size={batch} exceeds the {len(data.x)} examples of {source}")


def seeded_batch(data: TrainingData, seed: int, step: int, batch: int,
                 sampler: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch that pipeline/loop.py draws at ``step`` on rank 0, with torch seeded as the loop seeds it."""
    seed_k = step_seed(seed, 0, step)
    torch.manual_seed(seed_k)
    sampler.manual_seed(seed_k)
    index = torch.randperm(len(data.x), generator=sampler)[:batch].to(data.x.device)
    return data.x[index], None if data.labels is None else data.labels[index]


def cpu_model() -> str:
    """The first ``model name`` in /proc/cpuinfo, else whatever ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    """Total RAM from /proc/meminfo, None where that file does not exist."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, load (call before the run), torch build and threads, GPU."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "memory_gib": memory_gib(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info.update(
            cuda_device_name=torch.cuda.get_device_name(device),
            cuda_version=torch.version.cuda,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    return info


def warn_if_busy(info: dict[str, Any]) -> None:
    """Warn when other processes' load leaves fewer free CPUs than torch has threads (timings then suffer)."""
    load, cpus, threads = info["load_average_1m"], info["cpus_usable"], info["torch_threads"]
    if load is not None and info["device"] == "cpu" and load > cpus - threads + 0.5:
        print(f"warning: load average {load:.1f} on {cpus} CPUs with {threads} torch threads before the run: "
              "timings will be slow and noisy (try --threads or a quiet machine)", file=sys.stderr, flush=True)


def utc_timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_json_path(benchmark: str, config_path: str) -> Path:
    """benchmarks/results/BENCHMARK_CONFIGSTEM.json"""
    return RESULTS_DIR / f"{benchmark}_{Path(config_path).stem}.json"


def save_report(report: dict[str, Any], json_path: str | None, benchmark: str, config_path: str) -> Path:
    """Write the report to ``json_path`` (default: :func:`default_json_path`) and say where."""
    out = Path(json_path) if json_path else default_json_path(benchmark, config_path)
    write_json(out, report)
    print(f"wrote {out}")
    return out


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table: left-aligned first column, right-aligned others, floats to 4 significant digits."""
    cells = [headers] + [[format_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def format_cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
