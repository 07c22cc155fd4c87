"""Typed config: YAML, dotted overrides, and clear errors naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from cdrl.config import ConfigError, flatten, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "pipeline" / "configs"


@pytest.mark.parametrize("name", ["toy.yaml", "toy_official.yaml", "cifar10.yaml", "digits.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert config.train.iterations > 0 and config.run.name


def test_overrides_with_dotted_keys_and_yaml_values():
    config = load_config(CONFIGS / "toy.yaml", ["train.iterations=7", "train.batch_size=64", "run.name=x",
                                                 "run.seed=3", "langevin.c0=1e-3", "model.energy_net.channel_mult=[1,2]"])
    assert (config.train.iterations, config.train.batch_size, config.run.name, config.run.seed) == (7, 64, "x", 3)
    assert config.langevin.c0 == pytest.approx(1e-3)
    assert config.model.energy_net.channel_mult == [1, 2]


@pytest.mark.parametrize(("override", "match"), [
    ("train.iterationz=3", "train.iterationz"),
    ("bogus=1", "bogus"),
    ("train.batch_size=abc", "train.batch_size"),
    ("train.batch_size=0", "train.batch_size"),
    ("langevin.step_rule=fast", "langevin.step_rule"),
    ("train.ema_decay=1.5", "train.ema_decay"),
    ("train.zero_grad=maybe", "train.zero_grad"),
    ("noequals", "section.key=value"),
    ("schedule.logsnr_max=-10", "schedule.logsnr_max"),
])
def test_bad_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(CONFIGS / "toy.yaml", [override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_flatten_round_trip_keys():
    flat = flatten(load_config().to_dict())
    assert flat["train.batch_size"] == 256 and "model.energy_net.base_channels" in flat
