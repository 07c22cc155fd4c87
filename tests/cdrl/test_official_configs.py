"""The shipped official configurations carry the official hyper-parameters (docs/algorithm.md §3-§6, §8, §11).

Expected values are typed in from the specification, not read from the code, so editing a YAML file (or a
default it relies on) makes this fail.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from cdrl.config import flatten, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "pipeline" / "configs"

SHARED = {  # all three official scripts
    "schedule.num_levels": 6, "schedule.logsnr_min": -5.1, "schedule.logsnr_max": 9.8,
    "langevin.num_steps": 15, "langevin.step_multiplier": 1.0,
    "train.energy_betas": [0.9, 0.999], "train.initializer_lr": 1e-5, "train.initializer_betas": [0.9, 0.999],
    "train.energy_warmup": 10_000, "train.initializer_warmup": 10_000, "train.initializer_warmup_offset": 500,
    "train.grad_clip": 1.0, "train.ema_decay": 0.9999, "train.zero_grad": True,
    "model.energy_net.channel_mult": [1, 2, 2, 2], "model.energy_net.temb_dim": 128,
    "model.energy_net.spectral_norm": True,
}
IMAGES = {
    **SHARED,
    "langevin.step_rule": "image", "langevin.c0": 2e-4, "train.energy_lr": 1e-4, "train.batch_size": 256,
    "run.seed": 5, "data.horizontal_flip": True, "generation.tweedie": "faithful",
    "model.energy_net.base_channels": 128, "model.energy_net.blocks_per_resolution": 8,
    "model.energy_net.temb_hidden": 512, "model.initializer.base_channels": 64,
    "model.initializer.channel_mult": [1, 1, 1], "model.initializer.attention_resolutions": [16, 8],
    "model.initializer.dropout": 0.1, "model.initializer.temb_dim": 64, "model.initializer.temb_hidden": 256,
    "model.initializer.groups": 32, "eval.every": 20_000, "train.checkpoint_every": 50_000,
    "eval.num_samples": 5000,
}
EXPECTED = {
    "toy_official.yaml": {
        **SHARED,
        "langevin.step_rule": "toy", "langevin.c0": 1e-3, "train.energy_lr": 3e-6, "train.batch_size": 2500,
        "train.iterations": 100_001, "run.seed": 1, "data.name": "8squares", "data.num_points": 50_000,
        "model.energy_net.base_channels": 128, "model.energy_net.temb_hidden": 512, "model.initializer.base_channels": 64,
        "model.initializer.num_res_blocks": 1, "model.initializer.temb_dim": 128, "model.initializer.groups": 32,
        "model.num_classes": 0, "generation.tweedie": "none", "train.checkpoint_every": 10_000,
        "data.horizontal_flip": False,
    },
    "cifar10.yaml": {**IMAGES, "data.name": "cifar10", "train.iterations": 500_001, "model.num_classes": 0,
                     "model.initializer.num_res_blocks": 3},
    "imagenet32.yaml": {**IMAGES, "data.name": "imagenet32", "train.iterations": 1_000_001, "model.num_classes": 1000,
                        "model.initializer.num_res_blocks": 2, "train.label_dropout": 0.1},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_official_hyper_parameters(name):
    values = flatten(load_config(CONFIGS / name).to_dict())
    wrong = {key: (values[key], expected) for key, expected in EXPECTED[name].items() if values[key] != expected}
    assert not wrong, f"{name}: (configured, official) = {wrong}"
