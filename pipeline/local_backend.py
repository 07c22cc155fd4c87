"""Train in this process, without Ray: for debugging, unit tests and single-machine benchmarks."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from cdrl.config import Config
from pipeline.datasets.manifest import Manifest
from pipeline.datasets.reader import read_arrays
from pipeline.evaluation import Evaluator, evaluate_trainer, summary_metrics
from pipeline.checkpoints import local_store
from pipeline.health_guard import TrainingDiverged
from pipeline.loop import LoopHooks, TrainingData, WorkerContext, run_training
from pipeline.reference_stats import dataset_reference
from pipeline.run_result import RunResult


def load_training_data(uri: str) -> TrainingData:
    x, labels = read_arrays(uri)
    return TrainingData(torch.from_numpy(x), None if labels is None else torch.from_numpy(labels))


def run_dir(config: Config) -> Path:
    return Path(config.run.output_dir).absolute() / config.run.name


def train_locally(config: Config, data_uri: str, manifest: Manifest, warm_start: dict | None = None) -> RunResult:
    """Train (resuming from this run's latest checkpoint if any, else from ``warm_start`` weights if given),
    evaluate; the result names the final checkpoint."""
    out = run_dir(config)
    store = local_store(config, out)
    data = load_training_data(data_uri)
    latest = store.load_latest()
    resume = latest[1] if latest else None
    if latest is not None:
        print(f"resuming {config.run.name} from {latest[0]} (step {resume['trainer']['step']})")
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

    def health_event(step: int, kind: str, detail: str) -> None:
        with metrics_file.open("a") as f:
            f.write(json.dumps({"step": step, "health_event": kind, "detail": detail}) + "\n")

    hooks = LoopHooks(log=log, checkpoint=checkpoint, evaluate=evaluate_now, health_event=health_event)
    result = run_training(config, data, WorkerContext(), hooks, resume, warm_start)
    if result.diverged:
        raise TrainingDiverged(result.diverged)
    metrics, artifacts = evaluation["metrics"], evaluation["artifacts"]
    return RunResult(run_name=config.run.name, backend="local", checkpoint=saved["checkpoint"],
                     step=result.trainer.step_count, train_seconds=result.train_seconds,
                     dataset_version=manifest.version, metrics=summary_metrics(metrics),
                     artifacts={k: str(v) for k, v in artifacts.items()})
