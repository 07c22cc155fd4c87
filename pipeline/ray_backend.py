"""Data-parallel CDRL on Ray Train V2: the driver side (``train_on_ray``) and the worker side.

Driver: validate data, storage and MLflow up front; connect to (or start) Ray; build a TorchTrainer whose
RunConfig stores checkpoints under ``run.storage_path`` (a folder or s3://); re-running the same
``run.name`` resumes from the latest checkpoint. Workers: read their share of the Parquet shards through
Ray Data, wrap both nets in DDP (gloo on CPU, NCCL on GPU), run ``pipeline.loop.run_training``.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdrl.checkpoint import load_checkpoint, save_checkpoint
from cdrl.config import Config, config_from_dict
from pipeline.datasets.manifest import Manifest
from pipeline.evaluation import Evaluator, evaluate_trainer, summary_metrics
from pipeline.loop import LoopHooks, TrainingData, WorkerContext, run_training
from pipeline.reference_stats import dataset_reference, prepare_reference_stats
from pipeline.tracking import RunLogger, start_run

CHECKPOINT_FILE = "checkpoint.pt"
READ_BATCH_ROWS = 8192


# ----------------------------------------------------------------------------------------------- driver
def storage_root(config: Config) -> str:
    """Where Ray Train keeps this run's checkpoints: s3://… as given, local folders made absolute."""
    if config.run.storage_path and config.run.storage_path.startswith("s3://"):
        return config.run.storage_path.rstrip("/")
    return str(Path(config.run.storage_path or Path(config.run.output_dir) / "ray").absolute())


def checkpoint_uri(config: Config, checkpoint_path: str) -> str:
    """A user-facing URI of the checkpoint file inside a Ray checkpoint folder."""
    prefix = "s3://" if storage_root(config).startswith("s3://") else ""
    return f"{prefix}{checkpoint_path.rstrip('/')}/{CHECKPOINT_FILE}"


def check_storage(config: Config) -> None:
    """Fail before training when the checkpoint store is an unreachable or missing S3 bucket."""
    root = storage_root(config)
    if root.startswith("s3://"):
        from pipeline.datasets import storage

        storage.list_names(root)  # raises StorageError naming the URI


def connect_ray() -> None:
    """Join the running cluster (RAY_ADDRESS, `ray start`, `ray job submit`), else start a local one.

    ``ray.init()`` without an address looks only there; ``address="auto"`` would also join any Ray
    process it finds on the machine, e.g. another user's cluster.
    """
    import ray

    if ray.is_initialized():
        return
    ray.init(log_to_driver=True)


def quiet_ray_data() -> None:
    """Ray Data's per-operator progress bars flood job logs; the training loop has its own."""
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False


def train_on_ray(config: Config, data_uri: str, manifest: Manifest, warm_start: dict | None = None,
                 run_callbacks: list | None = None, tracking_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Train on Ray Train (resuming this run if its storage has checkpoints, else from ``warm_start`` weights);
    with tracking on, a finished run registers one model version (``pipeline.registry``) from this driver.
    ``run_callbacks`` go to Ray Train's RunConfig (Tune trials pass their reporter), ``tracking_tags`` to the
    MLflow run (a trial's parent run and trial id)."""
    import ray
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.datasets.reader import ray_dataset

    check_storage(config)
    prepare_reference_stats(config, data_uri, manifest)  # once, here, rather than on a worker mid-run
    tracking = None
    if config.tracking.enabled:
        tracking = start_run(config, {"dataset_version": manifest.version, "data_uri": data_uri, **(tracking_tags or {})},
                             dataset=(data_uri, manifest))
    connect_ray()
    quiet_ray_data()
    run_dir = Path(config.run.output_dir).absolute() / config.run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        train_loop_per_worker=worker_main,
        train_loop_config={"config": config.to_dict(), "data_uri": data_uri, "manifest": manifest.to_json(),
                           "tracking": tracking, "run_dir": str(run_dir),
                           # through the object store: workers on other nodes cannot read the driver's disk
                           "warm_start": ray.put(warm_start) if warm_start is not None else None},
        scaling_config=ScalingConfig(num_workers=config.ray.num_workers, use_gpu=config.ray.use_gpu,
                                     resources_per_worker={"CPU": config.ray.cpus_per_worker}),
        run_config=RunConfig(
            name=config.run.name,
            storage_path=storage_root(config),
            checkpoint_config=CheckpointConfig(num_to_keep=config.run.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.ray.max_failures),
            callbacks=run_callbacks,
        ),
        datasets={"train": ray_dataset(data_uri, manifest)},
        dataset_config=DataConfig(datasets_to_split=[], execution_options=ExecutionOptions(preserve_order=True)),
    )
    try:
        result = trainer.fit()
    except Exception:
        if tracking:
            RunLogger(*tracking).finish("FAILED")
        raise
    metrics = dict(result.metrics or {})
    uri = checkpoint_uri(config, result.checkpoint.path) if result.checkpoint else None
    registered = None
    if tracking:
        logger = RunLogger(*tracking)
        logger.set_tags({"checkpoint_uri": uri})
        if config.registry.enabled and uri:
            from pipeline.registry import register_checkpoint

            name, version = register_checkpoint(uri, config, *tracking, tags={"dataset_version": manifest.version,
                                                                              "step": int(metrics.get("step", 0))})
            registered = {"name": name, "version": version, "uri": f"models:/{name}/{version}"}
            print(f"registered {registered['uri']}")
        logger.finish()
    return {
        "run_name": config.run.name,
        "backend": "ray",
        "num_workers": config.ray.num_workers,
        "checkpoint": uri,
        "step": int(metrics.pop("step", 0)),
        "train_seconds": float(metrics.pop("train_seconds", 0.0)),
        "artifacts": {k.removeprefix("artifact/"): metrics.pop(k) for k in list(metrics) if k.startswith("artifact/")},
        "metrics": summary_metrics({k: v for k, v in metrics.items() if k.startswith(("eval/", "fid/"))}),
        "mlflow": {"tracking_uri": tracking[0], "run_id": tracking[1]} if tracking else None,
        "registered_model": registered,
        "dataset_version": manifest.version,
    }


# ----------------------------------------------------------------------------------------------- worker
def load_worker_data(manifest: Manifest, rank: int, world_size: int, device: torch.device) -> TrainingData:
    """Stream the dataset through Ray Data and keep rows rank, rank + W, rank + 2W, … (deterministic).

    Every worker sees the same ordered stream (preserve_order), so the split does not depend on timing and
    a resumed run sees the same rows as the original one.
    """
    import ray.train

    from pipeline.datasets.reader import to_model_space

    quiet_ray_data()
    shard = ray.train.get_dataset_shard("train")
    xs, labels, offset = [], [], 0
    for batch in shard.iter_batches(batch_size=READ_BATCH_ROWS, batch_format="numpy"):
        rows = len(batch["data"])
        keep = (np.arange(offset, offset + rows) % world_size) == rank
        offset += rows
        xs.append(to_model_space(batch["data"][keep], manifest))
        if "label" in batch:
            labels.append(np.asarray(batch["label"][keep], dtype=np.int64))
    x = torch.from_numpy(np.concatenate(xs)).to(device)
    y = torch.from_numpy(np.concatenate(labels)).to(device) if labels else None
    return TrainingData(x, y)


def silence_report_lines() -> None:
    """Ray Train logs every report's full metrics dict at INFO from each worker, under a logger named by
    its file path; the training loop prints its own progress."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any (so all ranks stop at the same step)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)  # NCCL reduces only CUDA tensors
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_gather_rows(tensor: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's tensor (same trailing shape, any row count) on every rank, on the CPU, in rank order."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return [tensor]
    local = tensor.to(device)  # NCCL gathers only CUDA tensors
    count = torch.tensor([len(local)], device=device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros(longest, *local.shape[1:], dtype=local.dtype, device=device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return [part[: int(c.item())].cpu() for part, c in zip(parts, counts)]


def _resume_state() -> dict | None:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return load_checkpoint(Path(folder) / CHECKPOINT_FILE)


def worker_main(loop_config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs."""
    import ray.train
    import ray.train.torch

    config = config_from_dict(loop_config["config"])
    manifest = Manifest.from_json(loop_config["manifest"], loop_config["data_uri"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    data = load_worker_data(manifest, rank, world_size, device)
    ctx = WorkerContext(rank=rank, world_size=world_size, device=device,
                        wrap=lambda net: ray.train.torch.prepare_model(net, move_to_device=device),
                        any_rank_flag=lambda flag: any_rank(flag, device))
    silence_report_lines()
    logger = RunLogger(*loop_config["tracking"]) if rank == 0 and loop_config["tracking"] else None
    if logger:
        logger.start_system_metrics()
    run_dir = Path(loop_config["run_dir"])
    last_metrics: dict[str, float] = {}

    def log(step: int, metrics: dict[str, float]) -> None:
        last_metrics.clear()
        last_metrics.update(metrics)
        if logger:
            logger.log_metrics(step, metrics)
        ray.train.report({"step": step, **metrics})

    final_eval: dict[str, Any] = {}
    evaluator = Evaluator(config, data.item_shape, reference=dataset_reference(loop_config["data_uri"], manifest),
                          rank=rank, world_size=world_size, device=device,
                          gather=lambda tensor: all_gather_rows(tensor, device))

    periodic_eval: dict[str, float] = {}

    def evaluate_and_report(step: int, trainer, final: bool) -> None:
        """A periodic evaluation is reported by every rank (ray.train.report is collective), rank 0's metrics."""
        evaluate_now(step, trainer, final)
        if not final:
            ray.train.report({"step": step, **last_metrics, **periodic_eval})
            periodic_eval.clear()

    def evaluate_now(step: int, trainer, final: bool) -> None:
        """Every rank samples its share with the EMA nets; rank 0 scores, logs metrics and images."""
        metrics, artifacts = evaluate_trainer(evaluator, trainer, run_dir, step, final)
        if rank != 0:
            return
        if logger:
            logger.log_metrics(step, metrics)
            for path in artifacts.values():
                if Path(path).suffix == ".png":
                    logger.log_artifact(path, f"images/step_{step:08d}")
        if not final:  # periodic evaluations also reach Ray Train's results (and so Ray Tune)
            periodic_eval.update(metrics)
        if final:
            final_eval.update(metrics)
            final_eval.update({f"artifact/{k}": str(v) for k, v in artifacts.items()})

    def checkpoint(step: int, state: dict, final: bool) -> None:
        with tempfile.TemporaryDirectory() as folder:
            saved = None
            if rank == 0:
                save_checkpoint(state, Path(folder) / CHECKPOINT_FILE)
                saved = ray.train.Checkpoint.from_directory(folder)
            extra = {"train_seconds": state["extra"]["train_seconds"], **final_eval} if final else {}
            ray.train.report({"step": step, **last_metrics, **extra}, checkpoint=saved)

    def crash_once(step: int) -> None:
        marker = run_dir / f".crash_injected_at_{step}"
        if step == config.ray.inject_crash_at_step and rank == world_size - 1 and not marker.exists():
            marker.touch()
            os._exit(1)  # a lost worker: Ray Train restarts the group from the last checkpoint

    hooks = LoopHooks(log=log, checkpoint=checkpoint, evaluate=evaluate_and_report, after_step=crash_once)
    warm_start = ray.get(loop_config["warm_start"]) if loop_config["warm_start"] is not None else None
    try:
        run_training(config, data, ctx, hooks, resume=_resume_state(), warm_start=warm_start)
    finally:
        if logger:
            logger.stop_system_metrics()
