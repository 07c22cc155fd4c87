"""Train in this process, without Ray: for debugging, unit tests and single-machine benchmarks."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from cdrl.config import Config
from cdrl.data import load_builtin
from pipeline.evaluation import evaluate
from pipeline.local_checkpoints import LocalCheckpointDir
from pipeline.loop import LoopHooks, TrainingData, WorkerContext, run_training


def load_training_data(config: Config) -> TrainingData:
    """The built-in dataset named by ``data.name``, or the prepared shards at ``data.uri``."""
    if config.data.uri:
        from pipeline.datasets.reader import read_arrays, validate_dataset

        validate_dataset(config.data.uri)
        x, labels = read_arrays(config.data.uri)
    else:
        x, labels = load_builtin(config.data.name, config.data.num_points, config.run.seed)
    return TrainingData(torch.from_numpy(x), None if labels is None else torch.from_numpy(labels))


def run_dir(config: Config) -> Path:
    return Path(config.run.output_dir).absolute() / config.run.name


def train_locally(config: Config) -> dict:
    """Train (resuming from this run's latest checkpoint if any), evaluate, return the summary dict."""
    out = run_dir(config)
    store = LocalCheckpointDir(config.run.storage_path or out / "checkpoints", config.run.keep_checkpoints)
    data = load_training_data(config)
    resume = store.load_latest()
    if resume is not None:
        print(f"resuming {config.run.name} from {store.latest()} (step {resume['trainer']['step']})")
    metrics_file = out / "metrics.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    saved: dict[str, str] = {}

    def log(step: int, metrics: dict[str, float]) -> None:
        with metrics_file.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    def checkpoint(step: int, ckpt: dict, final: bool) -> None:
        saved["checkpoint"] = str(store.save(step, ckpt))

    start = time.perf_counter()
    trainer = run_training(config, data, WorkerContext(), LoopHooks(log=log, checkpoint=checkpoint), resume)
    train_seconds = time.perf_counter() - start
    levels = trainer.objective.levels
    metrics, artifacts = evaluate(
        config, trainer.averaged("energy_net"), trainer.averaged("initializer"), levels, data.item_shape, out
    )
    return {
        "run_name": config.run.name,
        "backend": "local",
        "checkpoint": saved["checkpoint"],
        "step": trainer.step_count,
        "train_seconds": train_seconds,
        "metrics": metrics,
        "artifacts": {k: str(v) for k, v in artifacts.items()},
    }
