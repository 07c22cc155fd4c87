"""PNG figures for 2-D toys: sample scatters and the paper's per-level energy landscapes (docs/algorithm.md §11).

Matplotlib runs on the Agg backend so that plotting works in headless training workers. It is imported on
first use: importing pyplot costs about a second of CPU, which every Ray Train worker and driver would
otherwise pay at start-up, most of them never plotting.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from cdrl.schedule import NoiseSchedule

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

_PANEL_INCHES = 2.2
_DPI = 100
_GRID_CHUNK = 16_384


def _pyplot():
    """matplotlib.pyplot on the Agg backend (chosen before pyplot is first imported)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (creating parent folders), close it and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    _pyplot().close(fig)
    return path


def _draw_points(ax: plt.Axes, points: np.ndarray, lim: float) -> None:
    """Small, translucent markers so that 25,000-point toy samples (§11) stay readable."""
    points = np.asarray(points).reshape(-1, 2)
    ax.scatter(points[:, 0], points[:, 1], s=0.5, alpha=0.5, linewidths=0, rasterized=True)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")


def scatter_png(points: np.ndarray, path: str | Path, title: str | None = None, lim: float = 8.0) -> Path:
    """Scatter of 2-D samples (N, 2) over [-lim, lim]² saved as a PNG; returns the path (§11)."""
    fig, ax = _pyplot().subplots(figsize=(4, 4))
    _draw_points(ax, points, lim)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def _grid_points(lim: float, grid: int) -> torch.Tensor:
    """(grid², 2) points of a grid×grid lattice over [-lim, lim]²; row-major with y as the row index."""
    axis = torch.linspace(-lim, lim, grid)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


@torch.no_grad()
def _level_energy(
    energy_net: nn.Module,
    points: torch.Tensor,
    schedule: NoiseSchedule,
    step_sizes: torch.Tensor,
    t: int,
    labels: int | None,
) -> torch.Tensor:
    """f = F(sqrt(m_t)·x, λ_{t-1}) / s_t² at every point, evaluated in chunks (§2, §11)."""
    device = next(energy_net.parameters()).device
    scale = schedule.scale_sq[t].float().sqrt().to(device)
    logsnr = schedule.logsnr[t - 1].float().to(device)
    values = []
    for chunk in points.split(_GRID_CHUNK):
        level = logsnr.expand(len(chunk))
        label = None if labels is None else torch.full((len(chunk),), labels, dtype=torch.long, device=device)
        values.append(energy_net(scale * chunk.to(device), level, label).float().cpu())
    return torch.cat(values) / float(step_sizes[t]) ** 2


def _energy_maps(
    energy_net: nn.Module,
    schedule: NoiseSchedule,
    step_sizes: torch.Tensor,
    lim: float,
    grid: int,
    labels: int | None,
) -> list[torch.Tensor]:
    """Energy maps (grid, grid) for t = 1..K, with the net in eval mode (its mode is restored after)."""
    points = _grid_points(lim, grid)
    was_training = energy_net.training
    energy_net.eval()
    try:
        return [
            _level_energy(energy_net, points, schedule, step_sizes, t, labels).reshape(grid, grid)
            for t in range(1, schedule.num_levels + 1)
        ]
    finally:
        energy_net.train(was_training)


def energy_landscape_png(
    energy_net: nn.Module,
    schedule: NoiseSchedule,
    step_sizes: torch.Tensor,
    path: str | Path,
    samples_per_level: list[np.ndarray] | None = None,
    lim: float = 8.0,
    grid: int = 200,
    labels: int | None = None,
) -> Path:
    """The paper's per-level figure (§11): one column per level t = 1..K; returns the path.

    Rows: (a) energy f = F(sqrt(m_t)·x, λ_{t-1}) / s_t² on a grid×grid lattice over [-lim, lim]²;
    (b) its normalised density, a softmax of f over the grid; (c) if ``samples_per_level`` is given,
    the samples of x_{t-1} (``samples_per_level[t-1]``, so index 0 holds the final clean samples).
    ``step_sizes`` are the Langevin s_t indexed by t (``NoiseSchedule.langevin(...).step_size``);
    ``labels`` is one class index applied to every grid point, for a conditional net.
    """
    maps = _energy_maps(energy_net, schedule, step_sizes, lim, grid, labels)
    num_rows = 2 if samples_per_level is None else 3
    num_cols = schedule.num_levels
    fig, axes = _pyplot().subplots(
        num_rows, num_cols, figsize=(_PANEL_INCHES * num_cols, _PANEL_INCHES * num_rows), squeeze=False
    )
    extent = (-lim, lim, -lim, lim)
    for col, energy in enumerate(maps):
        t = col + 1
        density = torch.softmax(energy.reshape(-1).double(), dim=0).reshape(grid, grid)
        axes[0, col].imshow(energy.numpy(), origin="lower", extent=extent, cmap="viridis")
        axes[0, col].set_title(f"t = {t}")
        axes[1, col].imshow(density.numpy(), origin="lower", extent=extent, cmap="viridis")
        if samples_per_level is not None:
            _draw_points(axes[2, col], samples_per_level[t - 1], lim)
    row_names = ["energy f", "density", r"samples $x_{t-1}$"]
    for row in range(num_rows):
        axes[row, 0].set_ylabel(row_names[row])
        for ax in axes[row]:
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    return _save(fig, path)


def image_grid_png(images: np.ndarray, path: str | Path, columns: int = 8) -> Path:
    """A grid of (N, C, H, W) images in [-1, 1] (clamped, as for FID and saving, §7) written as a PNG."""
    images = np.clip(np.asarray(images, dtype=np.float32), -1.0, 1.0)
    n, channels, height, width = images.shape
    rows = -(-n // columns)
    canvas = np.ones((rows * (height + 1) + 1, columns * (width + 1) + 1, channels), dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        top, left = 1 + r * (height + 1), 1 + c * (width + 1)
        canvas[top : top + height, left : left + width] = (image.transpose(1, 2, 0) + 1.0) / 2.0
    fig = _pyplot().figure(figsize=(canvas.shape[1] / 16, canvas.shape[0] / 16))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas.squeeze(-1) if channels == 1 else canvas, cmap="gray" if channels == 1 else None,
              vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    return _save(fig, path)
