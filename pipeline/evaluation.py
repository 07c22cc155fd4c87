"""Evaluation of a model's EMA nets with one protocol, during training and in pipeline/evaluate.py (§9, §15).

The protocol: ``eval.num_samples`` samples (N), drawn in blocks of ``generation.batch_size`` whose noise is
seeded by (``eval.seed``, block index), so the samples do not depend on how many workers draw them. Worker r
of W draws blocks r, r + W, r + 2W, … and turns them into features (images: the ``eval.extractor``) or keeps
them (2-D toys); rank 0 gathers everything in block order and scores it:

- images: ``fid/EXTRACTOR_N``, the Fréchet distance to the dataset version's reference statistics
  (``pipeline/reference_stats.py``), plus a sample grid;
- 2-D toys: ``eval/in_support``, ``eval/balance`` (8squares) and ``eval/mmd_bw1`` against fresh held-out
  points, plus a scatter plot and the energy landscape;
- always ``eval/sample_nan_fraction``, ``eval/cost_s`` (wall seconds of the whole evaluation) and
  ``eval/samples_per_s``.

Metric names are the MLflow names; a training summary lists them without the ``eval/`` prefix.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cdrl.config import Config
from cdrl.data import TOY_DISTRIBUTIONS, sample_toy
from cdrl.factory import build_sampler, build_schedule, sampler_steps
from cdrl.metrics.features import FeatureExtractor, build_extractor, default_extractor
from cdrl.metrics.frechet import feature_statistics, frechet_distance
from cdrl.metrics.toy import toy_report
from cdrl.plots import energy_landscape_png, image_grid_png, scatter_png
from cdrl.schedule import LevelTable

HELD_OUT_SEED_OFFSET = 1_000_003  # true reference points never seen in training
GRID_IMAGES = 64

# Gathers one tensor per rank onto rank 0: returns [rank 0's, rank 1's, …] there (anything elsewhere).
Gather = Callable[[torch.Tensor], list[torch.Tensor]]


def local_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    return [tensor]


def held_out_reference(config: Config, num_points: int) -> np.ndarray | None:
    """Fresh points from a 2-D toy for MMD; None for datasets with no generator."""
    if config.data.name not in TOY_DISTRIBUTIONS:
        return None
    return sample_toy(config.data.name, num_points, config.run.seed + HELD_OUT_SEED_OFFSET)


def block_seed(seed: int, block: int) -> int:
    return (seed * 1_000_003 + block * 7_919 + 17) % (2**63 - 1)


@dataclass(frozen=True)
class EvalProtocol:
    """What makes two evaluations comparable: N, the seed, the blocks, the sampler and the extractor."""

    num_samples: int
    seed: int
    block_size: int
    steps_per_level: int
    tweedie: str
    extractor: str | None  # None: no FID (2-D data: the toy metrics)

    @classmethod
    def from_config(cls, config: Config, data_shape: tuple[int, ...], num_samples: int | None = None,
                    seed: int | None = None) -> EvalProtocol:
        e, gen = config.eval, config.generation
        extractor = default_extractor(data_shape, config.data.name) if e.extractor == "auto" else e.extractor
        if len(data_shape) != 3 or extractor == "none":
            extractor = None
        n = num_samples if num_samples is not None else e.num_samples
        if n < 2:
            raise ValueError(f"the number of evaluation samples must be >= 2, got {n}")
        return cls(n, e.seed if seed is None else seed, gen.batch_size, sampler_steps(config),
                   gen.tweedie, extractor)

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.num_samples / self.block_size)

    def block_sizes(self, rank: int, world_size: int) -> list[tuple[int, int]]:
        """(block index, size) of the blocks worker ``rank`` of ``world_size`` draws."""
        return [(b, min(self.block_size, self.num_samples - b * self.block_size))
                for b in range(rank, self.num_blocks, world_size)]

    @property
    def fid_name(self) -> str | None:
        return f"fid/{self.extractor}_{self.num_samples}" if self.extractor else None

    def describe(self) -> dict:
        return {"num_samples": self.num_samples, "seed": self.seed, "block_size": self.block_size,
                "steps_per_level": self.steps_per_level, "tweedie": self.tweedie, "extractor": self.extractor}


def check_extractor_available(config: Config, data_shape: tuple[int, ...]) -> None:
    """Before any work: FileNotFoundError (naming the file and where to put it) when FID needs missing weights."""
    if EvalProtocol.from_config(config, data_shape).extractor == "inception":
        from cdrl.metrics.inception import resolve_weights_path

        resolve_weights_path(config.eval.inception_weights)


def generate_blocks(protocol: EvalProtocol, config: Config, nets: Mapping[str, nn.Module], levels: LevelTable,
                    data_shape: tuple[int, ...], blocks: list[tuple[int, int]], device: torch.device | str = "cpu",
                    progress: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Samples of the given blocks (CPU, block order) from the method's sampler (cdrl.factory.build_sampler) and
    their per-level states (none for single-level methods); the caller's RNG is untouched."""
    sampler = build_sampler(config, levels)
    device = torch.device(device)
    finals, per_level = [], []
    forked = [device] if device.type == "cuda" else []
    for block, size in tqdm(blocks, desc="evaluation samples", unit="block", disable=not progress):
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(block_seed(protocol.seed, block))
            drawn = sampler.sample(nets, size, data_shape, device, steps=protocol.steps_per_level)
        finals.append(drawn.samples.cpu())
        per_level.append([v.cpu() for v in drawn.per_level or []])
    if not finals:
        return torch.zeros(0, *data_shape), []
    return torch.cat(finals), [torch.cat(parts) for parts in zip(*per_level)]


def as_images(samples: torch.Tensor) -> torch.Tensor:
    """Samples as images are saved and scored: NaN → 0, clamped to [-1, 1]."""
    return torch.nan_to_num(samples.float(), nan=0.0).clamp(-1.0, 1.0)


def share_payload(protocol: EvalProtocol, samples: torch.Tensor, extractor: FeatureExtractor | None) -> torch.Tensor:
    """What a worker sends to rank 0: features (float64) for images, the samples themselves for 2-D data."""
    if extractor is None:
        return samples.double()
    if not len(samples):
        return torch.zeros(0, extractor.dim, dtype=torch.float64)
    with torch.no_grad():
        return torch.cat([extractor(as_images(samples[i:i + 500])).cpu().double() for i in range(0, len(samples), 500)])


def in_block_order(parts: list[torch.Tensor], protocol: EvalProtocol) -> torch.Tensor:
    """Rank-ordered parts (rank r holds blocks r, r+W, …) → rows in block order."""
    world_size = len(parts)
    pieces: dict[int, torch.Tensor] = {}
    for rank, part in enumerate(parts):
        offset = 0
        for block, size in protocol.block_sizes(rank, world_size):
            pieces[block] = part[offset:offset + size]
            offset += size
    return torch.cat([pieces[b] for b in sorted(pieces)])


def fid(features: np.ndarray, reference_mu: np.ndarray, reference_sigma: np.ndarray) -> float:
    """Fréchet distance of ``features`` to the reference; NaN (with a warning) when it cannot be computed.

    With fewer samples than feature dimensions the covariance is singular; the distance is still defined
    (``frechet_distance`` regularises it) but biased upwards: compare values at the same N only.
    """
    if not np.isfinite(features).all():
        return float("nan")
    from scipy import linalg

    mu, sigma = feature_statistics(features)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            return frechet_distance(mu, sigma, reference_mu, reference_sigma)
    except ValueError as err:
        print(f"warning: FID not computed ({err})")
        return float("nan")


@dataclass
class Share:
    """One worker's part of an evaluation: the payload for rank 0 (features, or 2-D samples), how many of its
    samples hold NaN, and (for rank 0's own share) the samples and per-level states for the pictures."""

    payload: torch.Tensor
    nan_rows: float
    samples: torch.Tensor | None = None
    per_level: list[torch.Tensor] | None = None


class Evaluator:
    """One run's evaluation, built once per worker: the protocol, the extractor and (rank 0) the reference.

    ``reference(extractor)`` returns the ``ReferenceStats`` for images (called lazily, on rank 0 only;
    ``pipeline.reference_stats.dataset_reference`` gives one for a dataset).
    Call ``run`` on every rank at the same step: it holds a collective (``gather``) when W > 1.
    """

    def __init__(self, config: Config, data_shape: tuple[int, ...], *,
                 reference: Callable[[FeatureExtractor], object] | None = None, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu", gather: Gather = local_gather,
                 num_samples: int | None = None, seed: int | None = None, extractor: FeatureExtractor | None = None,
                 progress: bool = False) -> None:
        self.config, self.data_shape = config, tuple(data_shape)
        self.protocol = EvalProtocol.from_config(config, self.data_shape, num_samples, seed)
        self.rank, self.world_size, self.device, self.gather = rank, world_size, torch.device(device), gather
        self.progress = progress and rank == 0
        self.extractor = extractor
        if self.protocol.extractor and extractor is None:
            self.extractor = build_extractor(self.protocol.extractor, inception_weights=config.eval.inception_weights,
                                             device=self.device)
        self._reference_loader, self._reference = reference, None

    def reference(self):
        if self._reference is None and self._reference_loader is not None and self.extractor is not None:
            self._reference = self._reference_loader(self.extractor)
        return self._reference

    def share(self, nets: Mapping[str, nn.Module], levels: LevelTable) -> Share:
        """This worker's blocks: samples, per-level states and the payload for rank 0."""
        blocks = self.protocol.block_sizes(self.rank, self.world_size)
        samples, per_level = generate_blocks(self.protocol, self.config, nets, levels, self.data_shape, blocks,
                                             self.device, self.progress)
        nan_rows = float(torch.isnan(samples.reshape(len(samples), -1)).any(dim=1).sum()) if len(samples) else 0.0
        return Share(share_payload(self.protocol, samples, self.extractor), nan_rows, samples, per_level)

    def run(self, nets: Mapping[str, nn.Module], levels: LevelTable, out_dir: str | Path | None,
            tag: str = "final") -> tuple[dict[str, float], dict[str, Path]]:
        """On every rank at once (collectives inside): metrics and written files on rank 0, ({}, {}) elsewhere."""
        start = time.perf_counter()
        mine = self.share(nets, levels)
        payloads = self.gather(mine.payload)
        nan_rows = self.gather(torch.tensor([mine.nan_rows], dtype=torch.float64))
        if self.rank != 0:
            return {}, {}
        shares = [Share(p, float(n.sum()), mine.samples if r == 0 else None, mine.per_level if r == 0 else None)
                  for r, (p, n) in enumerate(zip(payloads, nan_rows))]
        return self.finish(shares, nets["energy_net"], levels, out_dir, tag, start)

    def finish(self, shares: list[Share], energy_net: nn.Module, levels: LevelTable, out_dir: str | Path | None,
               tag: str, start: float) -> tuple[dict[str, float], dict[str, Path]]:
        """Rank 0: score the gathered shares (rank order, rank 0's with its samples) and draw the pictures."""
        rows = in_block_order([share.payload for share in shares], self.protocol)
        metrics = {"eval/sample_nan_fraction": sum(share.nan_rows for share in shares) / self.protocol.num_samples}
        metrics.update(self.score(rows.numpy()))
        first = shares[0]
        artifacts = {}
        if out_dir is not None:
            artifacts = self.pictures(first.samples, first.per_level, energy_net, levels, rows, out_dir, tag)
        cost = time.perf_counter() - start
        metrics["eval/cost_s"] = cost
        metrics["eval/samples_per_s"] = self.protocol.num_samples / max(cost, 1e-9)
        return metrics, artifacts

    def score(self, rows: np.ndarray) -> dict[str, float]:
        """``fid/EXTRACTOR_N`` from gathered features, or the toy metrics from gathered 2-D samples."""
        if self.protocol.extractor:
            reference = self.reference()
            if reference is None:
                raise ValueError(f"no reference statistics for {self.protocol.fid_name}")
            return {self.protocol.fid_name: fid(rows, reference.mu, reference.sigma)}
        if self.data_shape != (2,):
            return {}
        reference_points = held_out_reference(self.config, self.protocol.num_samples)
        if reference_points is None:
            return {}
        report = toy_report(rows.astype(np.float32), reference_points, distribution=self.config.data.name)
        return {f"eval/{k}": v for k, v in report.items()}

    def pictures(self, samples, per_level, energy_net, levels, rows, out_dir, tag) -> dict[str, Path]:
        """Rank 0's share of the samples (all of them for 2-D data) as .npy, and the plots users look at."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        artifacts: dict[str, Path] = {"samples": out_dir / f"samples_{tag}.npy"}
        kept = (rows if self.protocol.extractor is None else samples).numpy().astype(np.float32)
        np.save(artifacts["samples"], kept)
        if self.data_shape == (2,):
            artifacts["scatter"] = scatter_png(kept, out_dir / f"samples_{tag}.png", title=f"{self.config.run.name} {tag}")
            if self.config.eval.plot and per_level:
                artifacts["energy_landscape"] = energy_landscape_png(
                    energy_net, build_schedule(self.config), levels.step_size.detach().cpu(),
                    out_dir / f"energy_landscape_{tag}.png", samples_per_level=[v.numpy() for v in per_level[::-1]],
                )
        elif len(self.data_shape) == 3:
            artifacts["grid"] = image_grid_png(samples.numpy()[:GRID_IMAGES], out_dir / f"samples_{tag}.png")
        return artifacts


def evaluate_trainer(evaluator: Evaluator, trainer, out_dir: str | Path, step: int,
                     final: bool) -> tuple[dict[str, float], dict[str, Path]]:
    """``Evaluator.run`` on a Trainer's EMA nets, files tagged "final" or "step_XXXXXXXX"."""
    nets = {name: trainer.averaged(name) for name in trainer.objective.network_names}
    return evaluator.run(nets, trainer.objective.levels, out_dir, tag="final" if final else f"step_{step:08d}")


def summary_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics as a training summary lists them: ``eval/`` dropped, ``fid/…`` kept."""
    return {k.removeprefix("eval/"): v for k, v in metrics.items()}


def checkpoint_share(checkpoint: dict, rank: int, world_size: int, num_samples: int | None, seed: int | None,
                     device: str = "cpu") -> Share:
    """One worker's share of the evaluation of a checkpoint (a Ray task of pipeline/evaluate.py)."""
    from cdrl.factory import build_levels, nets_from_checkpoint

    config, nets, data_shape = nets_from_checkpoint(checkpoint, device)
    evaluator = Evaluator(config, data_shape, rank=rank, world_size=world_size, device=device,
                          num_samples=num_samples, seed=seed)
    share = evaluator.share(nets, build_levels(config, device))
    if rank != 0:
        share.samples, share.per_level = None, None
    return share
