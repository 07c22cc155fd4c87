"""Train in this process, without Ray: for debugging, unit tests and single-machine benchmarks."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from cdrl.config import Config
from pipeline.datasets.manifest import Manifest
from pipeline.datasets.reader import read_arrays
from pipeline.evaluation import Evaluator, evaluate_trainer, summary_metrics
from pipeline.local_checkpoints import LocalCheckpointDir
from pipeline.loop import LoopHooks, TrainingData, WorkerContext, run_training
from pipeline.reference_stats import dataset_reference


def load_training_data(uri: str) -> TrainingData:
    x, labels = read_arrays(uri)
    return TrainingData(torch.from_numpy(x), None if labels is None else torch.from_numpy(labels))


def run_dir(config: Config) -> Path:
    return Path(config.run.output_dir).absolute() / config.run.name


def train_locally(config: Config, data_uri: str, manifest: Manifest, warm_start: dict | None = None) -> dict:
    """Train (resuming from this run's latest checkpoint if any, else from ``warm_start`` weights if given),
    evaluate, return the summary dict."""
    out = run_dir(config)
    store = LocalCheckpointDir(config.run.storage_path or out / "checkpoints", config.run.keep_checkpoints)
    data = load_training_data(data_uri)
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

    evaluation: dict = {}
    evaluator = Evaluator(config, data.item_shape, reference=dataset_reference(data_uri, manifest))

    def evaluate_now(step: int, trainer, final: bool) -> None:
        evaluation["metrics"], evaluation["artifacts"] = evaluate_trainer(evaluator, trainer, out, step, final)
        with metrics_file.open("a") as f:
            f.write(json.dumps({"step": step, **evaluation["metrics"]}) + "\n")

    hooks = LoopHooks(log=log, checkpoint=checkpoint, evaluate=evaluate_now)
    result = run_training(config, data, WorkerContext(), hooks, resume, warm_start)
    metrics, artifacts = evaluation["metrics"], evaluation["artifacts"]
    return {
        "run_name": config.run.name,
        "backend": "local",
        "checkpoint": saved["checkpoint"],
        "step": result.trainer.step_count,
        "train_seconds": result.train_seconds,
        "metrics": summary_metrics(metrics),
        "artifacts": {k: str(v) for k, v in artifacts.items()},
        "dataset_version": manifest.version,
    }
