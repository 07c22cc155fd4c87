"""Random horizontal flip of image batches (official CIFAR-10 / ImageNet32 transforms, docs/algorithm.md §11)."""
from __future__ import annotations

import torch

from cdrl.config import load_config
from cdrl.data.augment import random_horizontal_flip
from cdrl.training import Trainer
from pipeline.loop import LoopHooks, TrainingData, WorkerContext, run_training
from tests.cdrl.test_training_behaviour import TINY_IMAGE


def test_flip_mirrors_about_half_the_images_and_is_reproducible():
    x = torch.arange(4000 * 2 * 3, dtype=torch.float32).reshape(4000, 1, 2, 3)
    flipped = random_horizontal_flip(x, torch.Generator().manual_seed(3))
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    kept = (flipped == x).flatten(1).all(1)
    assert torch.all(mirrored ^ kept) and 0.45 < mirrored.float().mean() < 0.55
    assert torch.equal(flipped, random_horizontal_flip(x, torch.Generator().manual_seed(3)))


def batches_seen(monkeypatch, flip: bool) -> list[torch.Tensor]:
    seen = []

    def record(self, x, labels=None):
        seen.append(x.clone())
        self.step_count += 1
        return {"energy_loss": torch.tensor(0.0), "initializer_loss": torch.tensor(0.0)}

    monkeypatch.setattr(Trainer, "step", record)
    config = load_config(None, [*TINY_IMAGE, "train.iterations=6", "train.batch_size=64", "train.log_every=3",
                                f"data.horizontal_flip={str(flip).lower()}"])
    images = torch.arange(64 * 8 * 8, dtype=torch.float32).reshape(64, 1, 8, 8)
    run_training(config, TrainingData(images), WorkerContext(), LoopHooks())
    return seen


def test_training_batches_are_flipped_only_when_configured(monkeypatch):
    plain, flipped = batches_seen(monkeypatch, False), batches_seen(monkeypatch, True)
    assert len(plain) == len(flipped) == 6
    for a, b in zip(plain, flipped):  # same rows in the same order; about half of them mirrored
        mirrored = (b == a.flip(-1)).flatten(1).all(1)
        assert torch.all(mirrored | (b == a).flatten(1).all(1)) and 0.2 < mirrored.float().mean() < 0.8
    assert all(torch.equal(a, b) for a, b in zip(flipped, batches_seen(monkeypatch, True)))  # resumable
