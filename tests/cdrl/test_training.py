"""Trainer (§4, §6): warm-up, clipping, EMA, zero_grad, and a fixed-seed short-training regression."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cdrl.ema import EMA
from cdrl.factory import build_levels, build_nets, build_trainer
from cdrl.objectives.base import ObjectiveOutput
from cdrl.training import OptimizerSpec, Trainer


def test_warmup_schedules_match_the_official_multipliers(tiny_toy_config):
    config = tiny_toy_config
    config.train.energy_warmup = config.train.initializer_warmup = 10_000
    config.train.initializer_warmup_offset = 500
    trainer = build_trainer(config, build_nets(config, (2,)), build_levels(config))
    lr = lambda name: trainer.optimizers[name].param_groups[0]["lr"]  # noqa: E731
    assert lr("energy_net") == 0.0  # the first EBM update has lr 0 (§6)
    assert lr("initializer") == pytest.approx(0.05 * config.train.initializer_lr)  # (0+500)/10000 (§4)
    x = torch.randn(64, 2)
    trainer.step(x)
    assert lr("energy_net") == pytest.approx(config.train.energy_lr / 10_000)
    assert isinstance(trainer.optimizers["energy_net"], torch.optim.Adam)
    assert isinstance(trainer.optimizers["initializer"], torch.optim.AdamW)


def test_cosine_decay_runs_from_the_end_of_the_warmup_to_the_final_scale_and_survives_a_restore(tiny_toy_config):
    config = tiny_toy_config
    config.train.iterations, config.train.lr_decay, config.train.lr_final_scale = 12, "cosine", 0.1
    config.train.energy_warmup, config.train.initializer_warmup, config.train.initializer_warmup_offset = 4, 4, 2
    trainer = build_trainer(config, build_nets(config, (2,)), build_levels(config))
    spec = OptimizerSpec("adam", 1.0, (0.9, 0.999), warmup=4, decay_until=12, final_scale=0.1)
    assert [spec.lr_factor(k) for k in (0, 2, 4)] == [0.0, 0.5, 1.0]  # warm-up untouched, decay starts at 4
    assert spec.lr_factor(8) == pytest.approx(0.55)  # half way: 0.1 + 0.9 * 0.5
    assert spec.lr_factor(12) == pytest.approx(0.1) and spec.lr_factor(50) == pytest.approx(0.1)
    offset_spec = OptimizerSpec("adamw", 1.0, (0.9, 0.999), warmup=4, warmup_offset=2, decay_until=12, final_scale=0.1)
    assert offset_spec.lr_factor(2) == 1.0 and offset_spec.lr_factor(7) == pytest.approx(0.55)  # starts at 2
    x = torch.randn(64, 2)
    for _ in range(8):
        trainer.step(x)
    energy_lr = trainer.optimizers["energy_net"].param_groups[0]["lr"]
    assert energy_lr == pytest.approx(0.55 * config.train.energy_lr)
    restored = build_trainer(config, build_nets(config, (2,)), build_levels(config))
    restored.load_state_dict(trainer.state_dict())
    assert restored.optimizers["energy_net"].param_groups[0]["lr"] == pytest.approx(energy_lr)
    trainer.step(x)
    restored.step(x)
    assert restored.optimizers["energy_net"].param_groups[0]["lr"] == pytest.approx(
        trainer.optimizers["energy_net"].param_groups[0]["lr"])


def test_ema_effective_decay_warm_start():
    net = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.9999)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)  # n = 1: decay = min(0.9999, 2/11)
    assert ema.shadow[0].item() == pytest.approx(1 - 2 / 11)
    averaged = ema.averaged_copy(net)
    assert averaged.weight.item() == pytest.approx(1 - 2 / 11) and not averaged.training


class _ConstantGradient:
    """An objective whose loss has gradient 1 on every parameter, to observe zero_grad and clipping."""

    network_names = ("net",)

    def __call__(self, nets, x, labels):
        return ObjectiveOutput(losses={"net": sum(p.sum() for p in nets["net"].parameters())})


def _constant_gradient_trainer(zero_grad: bool, grad_clip: float) -> tuple[nn.Linear, Trainer]:
    net = nn.Linear(2, 2, bias=False)  # 4 parameters: a gradient of ones has norm 2
    spec = {"net": OptimizerSpec("adam", 0.0, (0.9, 0.999), 1)}
    return net, Trainer({"net": net}, _ConstantGradient(), spec, grad_clip=grad_clip, ema_decay=0.9, zero_grad=zero_grad)


@pytest.mark.parametrize(("zero_grad", "grad_after_two_steps"), [(True, 1.0), (False, 2.0)])
def test_zero_grad_flag(zero_grad, grad_after_two_steps):
    """train.zero_grad=false reproduces the official toy's accumulating gradients (§12.1)."""
    net, trainer = _constant_gradient_trainer(zero_grad, grad_clip=100.0)
    trainer.step(torch.zeros(1))
    trainer.step(torch.zeros(1))
    assert torch.allclose(net.weight.grad, torch.full((2, 2), grad_after_two_steps))


def test_gradient_norm_is_clipped_to_one():
    net, trainer = _constant_gradient_trainer(True, grad_clip=1.0)
    metrics = trainer.step(torch.zeros(1))
    assert torch.allclose(net.weight.grad, torch.full((2, 2), 0.5))
    assert metrics["grad_norm/net"].item() == pytest.approx(2.0)  # the norm before clipping


def test_non_finite_loss_is_an_error():
    class Nan:
        network_names = ("net",)

        def __call__(self, nets, x, labels):
            return ObjectiveOutput(losses={"net": nets["net"].weight.sum() * float("nan")})

    trainer = Trainer({"net": nn.Linear(1, 1)}, Nan(), {"net": OptimizerSpec("adam", 1e-3, (0.9, 0.999), 1)}, 1.0, 0.9)
    with pytest.raises(FloatingPointError, match="non-finite loss at step 0"):
        trainer.step(torch.zeros(1))
