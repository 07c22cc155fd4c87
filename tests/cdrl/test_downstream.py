"""Downstream tasks of a conditional CDRL model (§8): composing one attribute is that attribute's model,
guidance with w = 0 is the conditional model, inpainting keeps observed pixels exactly; the attribute toy."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cdrl.config import load_config
from cdrl.data.toy2d import eight_squares_with_attributes
from cdrl.factory import build_levels, build_nets
from cdrl.generation import Conditioning, Inpainting, generate
from cdrl.metrics.composition import quadrant_fractions
from tests.conftest import TINY_TOY

TINY_DIGITS = ["model.energy_net.base_channels=8", "model.energy_net.channel_mult=[1]", "model.energy_net.temb_dim=16",
               "model.energy_net.blocks_per_resolution=1", "model.energy_net.temb_hidden=16",
               "model.initializer.base_channels=16", "model.initializer.channel_mult=[1]", "model.initializer.groups=8",
               "model.initializer.attention_resolutions=[]", "model.initializer.num_res_blocks=1"]


class WithLabel(nn.Module):
    """A conditional net with its label fixed: an unconditional net of the same interface (the reference)."""

    def __init__(self, net: nn.Module, label: int):
        super().__init__()
        self.net, self.label = net, label

    def _labels(self, like: torch.Tensor) -> torch.Tensor:
        return torch.full((len(like),), self.label, dtype=torch.long)

    def condition(self, logsnr, labels=None):
        return self.net.condition(logsnr, self._labels(logsnr))

    def energy(self, y, condition):
        return self.net.energy(y, condition)

    def forward(self, y, logsnr, labels=None):
        return self.net(y, logsnr, self._labels(y))


def _conditional_nets(overrides, shape, num_classes):
    config = load_config(None, [*overrides, f"model.num_classes={num_classes}"])
    torch.manual_seed(0)
    nets = {k: v.eval() for k, v in build_nets(config, shape).items()}
    return nets, build_levels(config)


def _sample(nets, levels, n, shape, cond=None, seed=1, **kw):
    torch.manual_seed(seed)
    return generate(nets["energy_net"], nets["initializer"], levels, n, shape, 2, cond=cond, **kw)


def test_composing_one_attribute_equals_that_attributes_model():
    nets, levels = _conditional_nets(TINY_TOY, (2,), 4)
    left = 1  # net label of dataset label 0 ("left")
    composed = _sample(nets, levels, 64, (2,), Conditioning(labels=[torch.full((64,), left)], weights=[1.0]))
    reference = _sample({k: WithLabel(v, left) for k, v in nets.items()}, levels, 64, (2,))
    torch.testing.assert_close(composed, reference, rtol=1e-5, atol=1e-5)
    two = _sample(nets, levels, 64, (2,), Conditioning(labels=[torch.full((64,), left), torch.full((64,), 4)], weights=[1.0, 1.0]))
    assert not torch.allclose(two, reference, atol=1e-3)  # a second attribute changes the samples


def test_guidance_weight_zero_equals_the_conditional_model():
    nets, levels = _conditional_nets(TINY_DIGITS, (1, 8, 8), 10)
    reference_nets = {k: WithLabel(v, 4) for k, v in nets.items()}
    guided = _sample(nets, levels, 3, (1, 8, 8), Conditioning.guided(torch.full((3,), 4), 0.0), tweedie="faithful")
    reference = _sample(reference_nets, levels, 3, (1, 8, 8), tweedie="faithful")
    torch.testing.assert_close(guided, reference, rtol=1e-5, atol=1e-5)
    strong = _sample(nets, levels, 3, (1, 8, 8), Conditioning.guided(torch.full((3,), 4), 2.0), tweedie="faithful")
    assert not torch.allclose(strong, reference, atol=1e-3)


def test_inpainting_never_changes_observed_pixels():
    nets, levels = _conditional_nets(TINY_DIGITS, (1, 8, 8), 0)
    torch.manual_seed(0)
    observed = torch.rand(6, 1, 8, 8) * 2 - 1
    mask = torch.zeros(6, 1, 8, 8)
    mask[:, :, :4] = 1  # the upper half is observed
    x = _sample(nets, levels, 6, (1, 8, 8), inpaint=Inpainting(observed, mask), tweedie="faithful")
    assert torch.equal(x[:, :, :4], observed[:, :, :4])
    assert not torch.allclose(x[:, :, 4:], observed[:, :, 4:], atol=1e-2)


def test_attribute_toy_labels_are_half_planes():
    points, labels = eight_squares_with_attributes(2000, 0)
    assert points.shape == (4000, 2) and set(np.unique(labels)) == {0, 1, 2, 3}
    left, top = quadrant_fractions(points[labels == 0]), quadrant_fractions(points[labels == 3])
    assert left["top_right"] == left["bottom_right"] == 0 and left["top_left"] + left["bottom_left"] == 1
    assert top["bottom_left"] == top["bottom_right"] == 0 and top["top_left"] + top["top_right"] == 1
