"""Checkpoint format (§11): both nets, EMAs, optimizers, schedules, step, RNG; atomic writes."""
from __future__ import annotations

import pytest
import torch

from cdrl.checkpoint import build_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from cdrl.factory import build_levels, build_nets, build_trainer, nets_from_checkpoint


def _trained(config, steps=3):
    torch.manual_seed(0)
    trainer = build_trainer(config, build_nets(config, (2,)), build_levels(config))
    for _ in range(steps):
        trainer.step(torch.randn(64, 2) * 4)
    return trainer


def test_round_trip_restores_everything(tiny_toy_config, tmp_path):
    trainer = _trained(tiny_toy_config)
    path = save_checkpoint(build_checkpoint(trainer.state_dict(), tiny_toy_config.to_dict(), (2,)), tmp_path / "c.pt")
    loaded = load_checkpoint(path)
    assert loaded["trainer"]["step"] == 3 and set(loaded["rng"]) >= {"torch", "numpy", "python"}

    fresh = build_trainer(tiny_toy_config, build_nets(tiny_toy_config, (2,)), build_levels(tiny_toy_config))
    fresh.load_state_dict(loaded["trainer"])
    x = torch.randn(64, 2)
    torch.manual_seed(9)
    a = trainer.step(x)
    torch.manual_seed(9)
    b = fresh.step(x)
    assert torch.equal(a["energy_loss"], b["energy_loss"]) and torch.equal(a["initializer_loss"], b["initializer_loss"])
    for name in trainer.nets:
        for p, q in zip(trainer.nets[name].parameters(), fresh.nets[name].parameters()):
            assert torch.equal(p, q)


def test_nets_from_checkpoint_uses_ema_weights(tiny_toy_config, tmp_path):
    trainer = _trained(tiny_toy_config)
    ckpt = build_checkpoint(trainer.state_dict(), tiny_toy_config.to_dict(), (2,))
    _, nets, shape = nets_from_checkpoint(ckpt)
    assert shape == (2,)
    ema_weight = trainer.emas["initializer"].shadow[0]
    assert torch.equal(next(nets["initializer"].parameters()), ema_weight)
    _, raw, _ = nets_from_checkpoint(ckpt, use_ema=False)
    assert torch.equal(next(raw["initializer"].parameters()), next(trainer.nets["initializer"].parameters()))


def test_rng_state_round_trip():
    state = rng_state()
    a = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), a)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    truncated = tmp_path / "trunc.pt"
    save_checkpoint({"format": "cdrl-checkpoint/1", "x": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ValueError, match="trunc.pt"):
        load_checkpoint(truncated)
    other = tmp_path / "other.pt"
    torch.save({"hello": 1}, other)
    with pytest.raises(ValueError, match="not a cdrl-checkpoint"):
        load_checkpoint(other)


def test_failed_write_leaves_previous_file_intact(tmp_path):
    path = save_checkpoint({"format": "cdrl-checkpoint/1", "v": 1}, tmp_path / "c.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"format": "cdrl-checkpoint/1", "v": Unpicklable()}, path)
    assert load_checkpoint(path)["v"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "c.pt.sha256"]  # no temporary left behind
