"""Image energy net (§5.4) and UNet initializer (§5.5): parameter counts, shapes, the condition/energy split,
identity at init, input gradients and class conditioning."""
from __future__ import annotations

import math

import pytest
import torch

from cdrl.nets.image_energy import ImageEnergyNet
from cdrl.nets.unet import UNetInitializer


def _num_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _digits_energy(**kwargs) -> ImageEnergyNet:
    return ImageEnergyNet(in_channels=1, base_channels=16, channel_mult=(1, 2), blocks_per_resolution=1,
                          temb_hidden=64, **kwargs)


def _digits_unet(**kwargs) -> UNetInitializer:
    return UNetInitializer(in_channels=1, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                           attention_resolutions=(4,), groups=8, image_size=8, **kwargs)


def _small_rgb_energy(**kwargs) -> ImageEnergyNet:
    return ImageEnergyNet(base_channels=16, blocks_per_resolution=1, temb_hidden=64, **kwargs)


def _small_rgb_unet(**kwargs) -> UNetInitializer:
    return UNetInitializer(base_channels=16, num_res_blocks=1, temb_hidden=64, groups=8, **kwargs)


LOGSNR = torch.tensor([-5.1, 9.8])


@pytest.mark.full_size
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: ImageEnergyNet(), 34_833_152),
        (lambda: ImageEnergyNet(num_classes=1000), 35_346_176),
        (lambda: UNetInitializer(), 3_769_795),
        (lambda: UNetInitializer(num_res_blocks=2, num_classes=1000), 3_181_443),
    ],
    ids=["cifar-ebm", "i32-ebm", "cifar-unet", "i32-unet"],
)
def test_parameter_counts_match_the_paper_nets(make, expected):
    assert _num_params(make()) == expected


@pytest.mark.full_size
def test_full_size_nets_run_on_a_tiny_batch():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    assert ImageEnergyNet().eval()(x, LOGSNR).shape == (2,)
    assert UNetInitializer().eval()(x, LOGSNR).shape == x.shape


@pytest.mark.parametrize(
    ("make_energy", "make_unet", "shape"),
    [(_digits_energy, _digits_unet, (3, 1, 8, 8)), (_small_rgb_energy, _small_rgb_unet, (3, 3, 32, 32))],
    ids=["digits-8x8", "rgb-32x32"],
)
def test_output_shapes(make_energy, make_unet, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    logsnr = torch.tensor([-5.1, 0.0, 9.8])
    assert make_energy()(x, logsnr).shape == (shape[0],)
    assert make_unet()(x, logsnr).shape == shape


def test_energy_of_condition_equals_forward():
    torch.manual_seed(0)
    net = _small_rgb_energy().eval()
    y = torch.randn(2, 3, 32, 32)
    condition = net.condition(LOGSNR)
    torch.testing.assert_close(net.energy(y, condition), net(y, LOGSNR))


def test_condition_has_one_time_feature_per_block_then_the_head_vector():
    net = _digits_energy(num_classes=10).eval()
    condition = net.condition(LOGSNR, torch.tensor([1, 0]))
    assert len(condition) == 2 + 1
    assert condition[0].shape == (2, 16, 1, 1) and condition[1].shape == (2, 32, 1, 1)
    assert condition[-1].shape == (2, 32)


def test_energy_gradient_with_respect_to_input_flows():
    torch.manual_seed(0)
    net = _digits_energy().eval()
    y = torch.randn(2, 1, 8, 8, requires_grad=True)
    condition = net.condition(LOGSNR)
    (grad,) = torch.autograd.grad(net.energy(y, condition).sum(), y)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("make_unet", "shape"), [(_digits_unet, (2, 1, 8, 8)), (_small_rgb_unet, (2, 3, 32, 32))], ids=["digits-8x8", "rgb-32x32"]
)
def test_initializer_is_identity_plus_output_bias_at_init(make_unet, shape):
    torch.manual_seed(0)
    net = make_unet().eval()
    x = torch.randn(shape)
    bias = net.output.bias[None, :, None, None]
    fan_in = net.output.in_channels * 9
    torch.testing.assert_close(net(x, LOGSNR) - x, bias.expand_as(x))
    assert bias.abs().max() <= 1 / math.sqrt(fan_in)


def test_initializer_gradient_reaches_parameters_after_zero_init():
    torch.manual_seed(0)
    net = _digits_unet()
    x = torch.randn(2, 1, 8, 8)
    net(x, LOGSNR).square().sum().backward()
    assert net.output.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("make", [_digits_energy, _digits_unet], ids=["energy", "unet"])
def test_conditional_nets_accept_labels_and_none_as_null_label(make):
    torch.manual_seed(0)
    net = make(num_classes=10).eval()
    x = torch.randn(2, 1, 8, 8)
    with_null = net(x, LOGSNR, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(net(x, LOGSNR, None), with_null)
    assert net(x, LOGSNR, torch.tensor([3, 7])).shape == with_null.shape


def test_energy_depends_on_the_label():
    torch.manual_seed(0)
    net = _digits_energy(num_classes=10).eval()
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(net(x, LOGSNR, torch.tensor([3, 7])), net(x, LOGSNR, None))
