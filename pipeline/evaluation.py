"""End-of-run (and periodic) evaluation: EMA samples, quality metrics, and the pictures users look at."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cdrl.config import Config
from cdrl.data import TOY_DISTRIBUTIONS, sample_toy
from cdrl.factory import build_sampler
from cdrl.metrics.toy import toy_report
from cdrl.plots import energy_landscape_png, image_grid_png, scatter_png
from cdrl.schedule import LevelTable, NoiseSchedule

HELD_OUT_SEED_OFFSET = 1_000_003  # true reference points never seen in training


def held_out_reference(config: Config, num_points: int) -> np.ndarray | None:
    """Fresh points from a 2-D toy for MMD; None for datasets with no generator."""
    if config.data.name not in TOY_DISTRIBUTIONS:
        return None
    return sample_toy(config.data.name, num_points, config.run.seed + HELD_OUT_SEED_OFFSET)


def evaluate(
    config: Config,
    nets: dict[str, nn.Module],
    levels: LevelTable,
    data_shape: tuple[int, ...],
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    tag: str = "final",
) -> tuple[dict[str, float], dict[str, Path]]:
    """Sample ``eval.num_samples`` from the given (EMA) nets with the method's sampler; return metrics and files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = build_sampler(config, levels).sample(nets, config.eval.num_samples, data_shape, device)
    samples, per_level = drawn.samples, drawn.per_level
    samples_np = samples.numpy().astype(np.float32)
    artifacts = {"samples": out_dir / f"samples_{tag}.npy"}
    np.save(artifacts["samples"], samples_np)
    metrics: dict[str, float] = {"sample_nan_fraction": float(np.isnan(samples_np).any(axis=tuple(range(1, samples_np.ndim))).mean())}
    if len(data_shape) == 1 and data_shape[0] == 2:
        reference = held_out_reference(config, config.eval.num_samples)
        if reference is not None:
            metrics.update(toy_report(samples_np, reference, distribution=config.data.name))
        artifacts["scatter"] = scatter_png(samples_np, out_dir / f"samples_{tag}.png", title=f"{config.run.name} {tag}")
        if config.eval.plot and per_level is not None:
            schedule = NoiseSchedule(config.schedule.num_levels, config.schedule.logsnr_min, config.schedule.logsnr_max)
            step_sizes = levels.step_size.detach().cpu()
            artifacts["energy_landscape"] = energy_landscape_png(
                nets["energy_net"], schedule, step_sizes, out_dir / f"energy_landscape_{tag}.png",
                samples_per_level=[v.numpy() for v in per_level[::-1]],
            )
    elif len(data_shape) == 3:
        artifacts["grid"] = image_grid_png(samples_np[:64], out_dir / f"samples_{tag}.png")
    return metrics, artifacts


def evaluate_trainer(config: Config, trainer, data_shape: tuple[int, ...], out_dir: str | Path, step: int,
                     final: bool, device: torch.device | str = "cpu") -> tuple[dict[str, float], dict[str, Path]]:
    """``evaluate`` on a Trainer's EMA nets, files tagged "final" or "step_XXXXXXXX"."""
    nets = {name: trainer.averaged(name) for name in trainer.objective.network_names}
    return evaluate(config, nets, trainer.objective.levels, data_shape, out_dir, device,
                    tag="final" if final else f"step_{step:08d}")
