"""CDRL objective (§2, §4, §6): pairs, losses, gradients reaching the right network, metrics per level."""
from __future__ import annotations

import torch

from cdrl.factory import build_levels, build_nets
from cdrl.objectives.cdrl import CooperativeRecoveryLikelihood, per_level_mean


def test_losses_and_gradients_go_to_their_own_network(tiny_toy_config):
    torch.manual_seed(0)
    levels = build_levels(tiny_toy_config)
    nets = build_nets(tiny_toy_config, (2,))
    objective = CooperativeRecoveryLikelihood(levels, num_langevin_steps=3)
    out = objective(nets, torch.randn(64, 2) * 4, None)
    assert set(out.losses) == {"energy_net", "initializer"}
    out.losses["energy_net"].backward()
    assert all(p.grad is None for p in nets["initializer"].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in nets["energy_net"].parameters())
    for p in nets["energy_net"].parameters():
        p.grad = None
    out.losses["initializer"].backward()
    assert all(p.grad is None for p in nets["energy_net"].parameters())
    assert out.metrics["energy_positive"].shape == (6,)
    assert not nets["energy_net"].training and nets["initializer"].training  # §6 modes


def test_energy_loss_is_the_weighted_contrast(tiny_toy_config):
    """With 0 Langevin steps and a zero initializer noise, L_EBM = mean w_t (F(y⁻) − F(y⁺))."""
    torch.manual_seed(1)
    levels = build_levels(tiny_toy_config)
    nets = build_nets(tiny_toy_config, (2,))
    x = torch.randn(32, 2)
    objective = CooperativeRecoveryLikelihood(levels, num_langevin_steps=0)
    torch.manual_seed(5)
    out = objective(nets, x, None)
    # Replay the same randomness by hand.
    torch.manual_seed(5)
    t = torch.randint(1, 7, (32,))
    eps = torch.randn_like(x)
    x_t = levels.sqrt_alpha_bar[t, None] * x + levels.sigma_bar[t, None] * eps
    x_prev = levels.sqrt_alpha_bar[t - 1, None] * x + levels.sigma_bar[t - 1, None] * eps
    scale = levels.scale[t, None]
    with torch.no_grad():
        proposal = nets["initializer"](x_t, levels.logsnr[t]) + levels.init_noise_std[t, None] * torch.randn_like(x)
        y_neg = scale * (proposal / (scale + 1e-8))
        f_pos = nets["energy_net"](scale * x_prev, levels.logsnr[t - 1])
        f_neg = nets["energy_net"](y_neg, levels.logsnr[t - 1])
    expected = (levels.loss_weight[t] * (f_neg - f_pos)).mean()
    assert torch.allclose(out.losses["energy_net"], expected, atol=1e-5)
    assert torch.allclose(out.losses["initializer"], torch.zeros(()), atol=1e-8)


def test_label_dropout_maps_to_null_label():
    objective = CooperativeRecoveryLikelihood(build_levels_default(), 0, label_dropout=0.5)
    torch.manual_seed(0)
    labels = objective.net_labels(torch.arange(10).repeat(100))
    assert labels.min() == 0 and labels.max() == 10
    assert 0.4 < (labels == 0).float().mean() < 0.6


def build_levels_default():
    from cdrl.config import load_config

    return build_levels(load_config())


def test_per_level_mean_handles_empty_levels():
    values = torch.tensor([1.0, 3.0, 5.0])
    t = torch.tensor([1, 1, 3])
    out = per_level_mean(values, t, 3)
    assert out[0] == 2.0 and torch.isnan(out[1]) and out[2] == 5.0
