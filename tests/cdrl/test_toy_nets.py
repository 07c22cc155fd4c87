"""Toy MLP energy net (§5.2) and initializer (§5.3): parameter counts, identity at init, the hoisting split."""
from __future__ import annotations

import torch

from cdrl.nets import count_parameters
from cdrl.nets.toy import ToyEnergyNet, ToyInitializer


def test_official_parameter_counts():
    assert count_parameters(ToyEnergyNet()) == 1_217_920
    assert count_parameters(ToyInitializer()) == 58_432


def test_initializer_is_identity_at_init():
    net = ToyInitializer()
    x = torch.randn(16, 2) * 5
    assert torch.equal(net(x, torch.full((16,), 1.0)), x)


def test_condition_energy_split_equals_forward_and_depends_on_level():
    torch.manual_seed(0)
    net = ToyEnergyNet(base_width=16, temb_hidden=32).eval()
    y, logsnr = torch.randn(8, 2), torch.linspace(-5, 9, 8)
    assert torch.allclose(net.energy(y, net.condition(logsnr)), net(y, logsnr))
    assert not torch.allclose(net(y, logsnr), net(y, logsnr.flip(0)))


def test_conditional_toy_nets_use_labels_and_null_label():
    torch.manual_seed(0)
    energy = ToyEnergyNet(base_width=16, temb_hidden=32, num_classes=3).eval()
    init = ToyInitializer(num_classes=3)
    y, logsnr = torch.randn(4, 2), torch.zeros(4)
    assert torch.allclose(energy(y, logsnr, None), energy(y, logsnr, torch.zeros(4, dtype=torch.long)))
    assert not torch.allclose(energy(y, logsnr, torch.ones(4, dtype=torch.long)), energy(y, logsnr, None))
    assert init(y, logsnr, torch.tensor([0, 1, 2, 3])).shape == (4, 2)


def test_spectral_norm_weights_are_buffers_not_parameters():
    net = ToyEnergyNet(base_width=16, temb_hidden=32)
    names = [n for n, _ in net.named_buffers()]
    assert any(n.endswith("_u") for n in names)
