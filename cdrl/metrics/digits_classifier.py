"""A small CNN classifier of scikit-learn's 8×8 digits: the feature extractor behind "digits-FID".

FID's Inception (docs/algorithm.md §9) sees 8×8 digits as a few blurry pixels at 299×299; a classifier
trained on the digits themselves gives features that separate real from poor digits. Its penultimate layer
(``features``, 128-d) feeds the Fréchet distance ("digits-FID"); its logits give a class accuracy for
generated digits (guidance, inpainting).

Training is fixed: a seeded 80/20 split of the 1,797 digits, seeded initialisation and batch order, CPU,
a few seconds. The trained weights are cached under ``CDRL_CACHE_DIR`` (default ``~/.cache/cdrl``) by a
content hash of (code version, data, hyper-parameters), so every process loads the same network.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cdrl.data.images import load_digits

CODE_VERSION = 1  # bump when the network or the training changes
CACHE_ENV = "CDRL_CACHE_DIR"
FEATURE_DIM = 128
NUM_CLASSES = 10


@dataclass(frozen=True)
class TrainingRecipe:
    seed: int = 0
    held_out_fraction: float = 0.2
    epochs: int = 15
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 1  # random translations by up to this many pixels (training only)


class DigitsClassifier(nn.Module):
    """(N, 1, 8, 8) digits in [-1, 1] → logits over classes 0..9; ``features`` = penultimate layer (N, 128)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8×8 → 4×4
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(64 * 4 * 4, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        self.held_out_accuracy = float("nan")
        self.fingerprint = "digits-untrained"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(_checked(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted class 0..9 per digit."""
        return self.forward(x.float()).argmax(dim=1)


def _checked(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise ValueError(f"the digits classifier takes (N, 1, 8, 8) images in [-1, 1], got {tuple(x.shape)}")
    return x


def digits_split(recipe: TrainingRecipe = TrainingRecipe()) -> dict[str, np.ndarray]:
    """The fixed split: ``train_x``, ``train_y``, ``held_out_x``, ``held_out_y`` (model space, int64 labels)."""
    images, labels = load_digits()
    order = np.random.default_rng(recipe.seed).permutation(len(images))
    cut = int(round(len(images) * (1 - recipe.held_out_fraction)))
    train, held = order[:cut], order[cut:]
    return {"train_x": images[train], "train_y": labels[train], "held_out_x": images[held], "held_out_y": labels[held]}


def _shifted(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Each digit translated by a random (dy, dx) in [-max_shift, max_shift], background (-1) filled in."""
    if max_shift == 0:
        return x
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    shifts = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=generator)
    out = torch.empty_like(x)
    for dy in range(2 * max_shift + 1):
        for dx in range(2 * max_shift + 1):
            chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            out[chosen] = padded[chosen, :, dy:dy + 8, dx:dx + 8]
    return out


def train_digits_classifier(recipe: TrainingRecipe = TrainingRecipe()) -> DigitsClassifier:
    """Train on the fixed split with a fixed seed (single-threaded on CPU: the same weights every time)."""
    split = digits_split(recipe)
    x, y = torch.from_numpy(split["train_x"]), torch.from_numpy(split["train_y"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reductions in a fixed order
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            model = DigitsClassifier()
            generator = torch.Generator().manual_seed(recipe.seed)
            optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
            steps = recipe.epochs * ((len(x) + recipe.batch_size - 1) // recipe.batch_size)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps)
            model.train()
            for _ in range(recipe.epochs):
                order = torch.randperm(len(x), generator=generator)
                for start in range(0, len(x), recipe.batch_size):
                    index = order[start:start + recipe.batch_size]
                    loss = F.cross_entropy(model(_shifted(x[index], generator, recipe.max_shift)), y[index])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
            model.eval().requires_grad_(False)
            model.held_out_accuracy = held_out_accuracy(model, split)
    finally:
        torch.set_num_threads(threads)
    return model


def held_out_accuracy(model: DigitsClassifier, split: dict[str, np.ndarray]) -> float:
    predicted = model.predict(torch.from_numpy(split["held_out_x"]))
    return float((predicted.numpy() == split["held_out_y"]).mean())


def content_hash(recipe: TrainingRecipe = TrainingRecipe()) -> str:
    """sha256 over (code version, the digits' bytes, the recipe): the cache key of the trained weights."""
    images, labels = load_digits()
    digest = hashlib.sha256(json.dumps({"code_version": CODE_VERSION, "recipe": asdict(recipe)}, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cdrl")


def load_digits_classifier(cache_dir: str | Path | None = None, recipe: TrainingRecipe = TrainingRecipe()) -> DigitsClassifier:
    """The trained classifier from the cache, training (and caching) it first if needed."""
    key = content_hash(recipe)
    path = Path(cache_dir or default_cache_dir()) / f"digits_classifier-{key[:16]}.pt"
    model = DigitsClassifier()
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["state_dict"])
            model.held_out_accuracy = float(saved["held_out_accuracy"])
        except Exception:  # a damaged cache file is retrained and replaced
            saved = None
        if saved is not None:
            model.eval().requires_grad_(False)
            model.fingerprint = f"digits-{key[:16]}"
            return model
    model = train_digits_classifier(recipe)
    model.fingerprint = f"digits-{key[:16]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        torch.save({"state_dict": model.state_dict(), "held_out_accuracy": model.held_out_accuracy}, f)
    os.replace(tmp, path)
    return model
