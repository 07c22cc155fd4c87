"""Toy figures (docs/algorithm.md §11): the per-level energy landscape and the sample scatter."""
from __future__ import annotations

import matplotlib.image
import numpy as np
import torch

from cdrl.data.toy2d import sample_toy
from cdrl.nets.toy import ToyEnergyNet
from cdrl.plots import energy_landscape_png, scatter_png
from cdrl.schedule import NoiseSchedule

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path) -> None:
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 50


def test_energy_landscape_writes_png_and_restores_train_mode(tmp_path):
    torch.manual_seed(0)
    net = ToyEnergyNet(base_width=16, temb_hidden=32)
    schedule = NoiseSchedule(num_levels=3)
    step_sizes = schedule.langevin("toy", 1e-3).step_size
    samples = [sample_toy("8squares", 300, seed=level) for level in range(schedule.num_levels + 1)]
    path = energy_landscape_png(net, schedule, step_sizes, tmp_path / "energy.png", samples, grid=20)
    assert path == tmp_path / "energy.png"
    _assert_png(path)
    assert net.training


def test_energy_landscape_without_samples(tmp_path):
    net = ToyEnergyNet(base_width=16, temb_hidden=32).eval()
    schedule = NoiseSchedule(num_levels=3)
    path = energy_landscape_png(net, schedule, schedule.langevin("toy", 1e-3).step_size, tmp_path / "e.png", grid=20)
    _assert_png(path)
    assert not net.training


def test_scatter_writes_png(tmp_path):
    path = scatter_png(np.random.default_rng(0).normal(size=(500, 2)), tmp_path / "sub" / "scatter.png", title="x")
    _assert_png(path)
