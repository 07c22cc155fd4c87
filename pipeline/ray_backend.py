"""Data-parallel CDRL on Ray Train V2: the driver side (``train_on_ray``) and the worker side.

Driver: validate data, storage and MLflow up front; connect to (or start) Ray; build a TorchTrainer whose
RunConfig stores checkpoints under ``run.storage_path`` (a folder or s3://; the store is
``pipeline.checkpoints``); re-running the same ``run.name`` resumes from the latest checkpoint; the run's last
report becomes a ``pipeline.run_result.RunResult``. Workers: read their share of the Parquet shards through
Ray Data, wrap both nets in DDP (gloo on CPU, NCCL on GPU), run ``pipeline.loop.run_training``.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdrl.config import Config, ConfigError, config_from_dict
from pipeline import checkpoints
from pipeline.datasets.manifest import Manifest
from pipeline.evaluation import Evaluator, evaluate_trainer
from pipeline.loop import LoopHooks, TrainingData, WorkerContext, run_training
from pipeline.reference_stats import dataset_reference, prepare_reference_stats
from pipeline.health_guard import TrainingDiverged
from pipeline.run_failures import InfrastructureFailure, infrastructure_failure
from pipeline.run_result import RunResult, divergence_report, final_report
from pipeline.tracking import RunLogger, start_run
from pipeline.tracking_buffer import BufferedRunLogger

READ_BATCH_ROWS = 8192
LOOPBACK = "127.0.0.1"
LOCAL_RAY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-machine mode, servers on loopback
FINISH_WAIT_S = 60.0


# ----------------------------------------------------------------------------------------------- driver
def running_cluster_known() -> bool:
    """Whether there is a cluster to join: RAY_ADDRESS (``ray job submit``) or ``ray start``'s address file."""
    if os.environ.get("RAY_ADDRESS"):
        return True
    temp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return (Path(temp) / "ray" / "ray_current_cluster").is_file()


def keep_local_ray_on_loopback() -> None:
    """Before Ray is imported: an in-process cluster started by this driver serves this machine only, so
    every Ray server binds 127.0.0.1 (Ray's single-machine mode) instead of the node address and ::."""
    if "ray" not in sys.modules and not running_cluster_known():
        os.environ.setdefault(LOCAL_RAY_ENV, "0")


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


def check_scaling(config: Config, manifest: Manifest) -> None:
    """The global batch splits evenly over the workers, and each worker's share of the data holds a batch."""
    workers, batch = config.ray.num_workers, config.train.batch_size
    if batch % workers:
        raise ConfigError(f"train.batch_size: {batch} is not divisible by ray.num_workers={workers}")
    rows = manifest.num_rows // workers
    if batch // workers > rows:
        raise ConfigError(f"train.batch_size: {batch // workers} per worker exceeds the {rows} rows each of the "
                          f"{workers} workers holds ({manifest.num_rows} in the dataset)")


def train_on_ray(config: Config, data_uri: str, manifest: Manifest, warm_start: dict | None = None,
                 run_callbacks: list | None = None, tracking_tags: dict[str, str] | None = None,
                 stoppable_at_evaluations: bool = False) -> RunResult:
    """Train on Ray Train (resuming this run if its storage has checkpoints, else from ``warm_start`` weights);
    with tracking on, a finished run registers one model version (``pipeline.registry``) from this driver.
    ``run_callbacks`` go to Ray Train's RunConfig (Tune trials pass their reporter), ``tracking_tags`` to the
    MLflow run (a trial's parent run and trial id). ``stoppable_at_evaluations``: a scheduler may end the run
    at any evaluation report (a Tune trial under ASHA), so the MLflow buffer is flushed before each one and
    nothing already logged dies with the run."""
    keep_local_ray_on_loopback()
    import ray
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.datasets.reader import ray_dataset

    check_scaling(config, manifest)
    checkpoints.check_storage(config)
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
                           "warm_start": ray.put(warm_start) if warm_start is not None else None,
                           "checkpoint_root": checkpoints.run_root(config),
                           "flush_before_evaluation_reports": stoppable_at_evaluations},
        scaling_config=ScalingConfig(num_workers=config.ray.num_workers, use_gpu=config.ray.use_gpu,
                                     resources_per_worker={"CPU": config.ray.cpus_per_worker},
                                     placement_strategy=config.ray.placement_strategy),
        run_config=RunConfig(
            name=config.run.name,
            **checkpoints.ray_storage(config),
            checkpoint_config=CheckpointConfig(num_to_keep=config.run.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.ray.max_failures),
            callbacks=run_callbacks,
        ),
        datasets={"train": ray_dataset(data_uri, manifest)},
        dataset_config=DataConfig(datasets_to_split=[], execution_options=ExecutionOptions(preserve_order=True)),
    )
    try:
        result = trainer.fit()
    except Exception as error:
        failure = infrastructure_failure(error)
        if tracking:
            finish_tracking(tracking, "FAILED", {"cdrl.failure": failure or type(error).__name__})
        if failure:
            raise InfrastructureFailure(failure) from error
        raise
    reported = {**dict(result.metrics or {}), **(result.return_value or {})}  # return value: divergence only
    run = RunResult.from_reported(
        reported, run_name=config.run.name, backend="ray", num_workers=config.ray.num_workers,
        checkpoint=checkpoints.checkpoint_uri(config, result.checkpoint.path) if result.checkpoint else None,
        dataset_version=manifest.version, tracking=tracking)
    if run.diverged:
        if tracking:
            finish_tracking(tracking, "FAILED", {"cdrl.failure": run.diverged})
        raise TrainingDiverged(run.diverged)
    if tracking:
        if config.registry.enabled and run.checkpoint:
            from pipeline.registry import register_checkpoint

            name, version = register_checkpoint(run.checkpoint, config, *tracking,
                                                tags={"dataset_version": manifest.version, "step": run.step})
            run.registered_model = {"name": name, "version": version, "uri": f"models:/{name}/{version}"}
            print(f"registered {run.registered_model['uri']}")
        finish_tracking(tracking, "FINISHED", {"checkpoint_uri": run.checkpoint})
    return run


def finish_tracking(tracking: tuple[str, str], status: str, tags: dict[str, Any]) -> None:
    """End the MLflow run; an unreachable server costs a warning, never the training run's result."""
    from pipeline.storage import with_retries

    def finish() -> None:
        logger = RunLogger(*tracking)
        logger.set_tags(tags)
        logger.finish(status)

    try:
        with_retries(lambda: _as_os_error(finish), tracking[0], "end the MLflow run at", FINISH_WAIT_S)
    except OSError as error:
        print(f"warning: could not mark MLflow run {tracking[1]} {status}: {error}", file=sys.stderr)


def _as_os_error(operation) -> None:
    try:
        operation()
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 — MLflow client errors, retried like storage errors
        raise ConnectionError(" ".join(str(error).split())[:300]) from error


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


class _DropReportLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Reporting training result")


def silence_report_lines() -> None:
    """Ray Train logs every report's full metrics dict at INFO from each worker (under a logger named by
    its source file); the training loop prints its own progress. Filter those records, without importing
    Ray's internals."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.startswith(("ray", "/")) and "train" in name:
            logger.addFilter(_DropReportLines())


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


def worker_main(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """The function every Ray Train worker runs; returns the divergence report when the health guard stopped it."""
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
    system_metrics = RunLogger(*loop_config["tracking"]) if rank == 0 and loop_config["tracking"] else None
    if system_metrics:
        system_metrics.start_system_metrics()
    run_dir = Path(loop_config["run_dir"])
    checkpoint_root, faults = loop_config["checkpoint_root"], config.faults
    logger = None
    if rank == 0 and loop_config["tracking"]:
        logger = BufferedRunLogger(*loop_config["tracking"], spill_file=run_dir / "mlflow_unsent_metrics.jsonl",
                                   capacity=faults.tracking_buffer)
    last_metrics: dict[str, float] = {}

    def log(step: int, metrics: dict[str, float]) -> None:
        last_metrics.clear()
        last_metrics.update(metrics)
        if logger:
            logger.log_metrics(step, metrics)
        ray.train.report({"step": step, **metrics})

    final_eval: dict[str, float] = {}
    final_artifacts: dict[str, Any] = {}
    evaluator = Evaluator(config, data.item_shape, reference=dataset_reference(loop_config["data_uri"], manifest),
                          rank=rank, world_size=world_size, device=device,
                          gather=lambda tensor: all_gather_rows(tensor, device))

    periodic_eval: dict[str, float] = {}

    def evaluate_and_report(step: int, trainer, final: bool) -> None:
        """A periodic evaluation is reported by every rank (ray.train.report is collective), rank 0's metrics."""
        evaluate_now(step, trainer, final)
        if not final:
            if logger and loop_config["flush_before_evaluation_reports"]:
                logger.flush(faults.tracking_flush_s)
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
            final_artifacts.update(artifacts)

    def checkpoint(step: int, state: dict, final: bool) -> None:
        report = {"step": step, **last_metrics}
        if final:
            unsent = logger.close(faults.tracking_flush_s)["unsent"] if logger else None
            report = final_report(step, last_metrics, state["extra"]["train_seconds"], final_eval, final_artifacts,
                                  unsent)
        saved = checkpoints.staged_checkpoint(state) if rank == 0 else None
        ray.train.report(report, checkpoint=saved,
                         checkpoint_upload_fn=checkpoints.upload_with_retries(checkpoint_root, faults.storage_wait_s))
        if saved is not None:
            checkpoints.discard_staged(saved)

    def health_event(step: int, kind: str, detail: str) -> None:
        if logger:
            logger.log_metrics(step, {f"health/event_{kind}": 1.0})
            logger.set_tags({f"health.last_{kind}": detail[:4900]})

    def crash_once(step: int) -> None:
        marker = run_dir / f".crash_injected_at_{step}"
        if step == config.ray.inject_crash_at_step and rank == world_size - 1 and not marker.exists():
            marker.touch()
            os._exit(1)  # a lost worker: Ray Train restarts the group from the last checkpoint

    hooks = LoopHooks(log=log, checkpoint=checkpoint, evaluate=evaluate_and_report, after_step=crash_once,
                      health_event=health_event)
    warm_start = ray.get(loop_config["warm_start"]) if loop_config["warm_start"] is not None else None
    try:
        result = run_training(config, data, ctx, hooks,
                              resume=checkpoints.resume_state(checkpoint_root, faults.storage_wait_s, rank),
                              warm_start=warm_start)
    finally:
        if system_metrics:
            system_metrics.stop_system_metrics()
    if result.diverged:  # every rank stops here together; the driver turns this into one error line
        unsent = logger.close(faults.tracking_flush_s)["unsent"] if logger else None
        # Through the workers' return value (Result.return_value): Result.metrics holds only the metrics of
        # the latest *checkpoint* report, and a diverged run reports no checkpoint.
        return divergence_report(result.trainer.step_count, result.diverged, unsent)
    return None
