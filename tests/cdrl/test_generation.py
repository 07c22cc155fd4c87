"""Generation (§7, §8): shapes, per-level outputs, Tweedie modes, guidance, inpainting, OOD scores."""
from __future__ import annotations

import pytest
import torch

from cdrl.config import load_config
from cdrl.factory import build_levels, build_nets
from cdrl.generation import Conditioning, Inpainting, energy_score, generate, generate_in_batches, tweedie_denoise


@pytest.fixture
def toy_nets(tiny_toy_config):
    torch.manual_seed(0)
    nets = {k: v.eval() for k, v in build_nets(tiny_toy_config, (2,)).items()}
    return tiny_toy_config, nets, build_levels(tiny_toy_config)


def test_generate_shapes_and_per_level_outputs(toy_nets):
    config, nets, levels = toy_nets
    x, per_level = generate(nets["energy_net"], nets["initializer"], levels, 50, (2,), steps_per_level=2, return_levels=True)
    assert x.shape == (50, 2) and len(per_level) == 6 and torch.equal(per_level[-1], x)
    assert torch.isfinite(x).all()


def test_batched_generation_matches_total_count(toy_nets):
    config, nets, levels = toy_nets
    x, per_level = generate_in_batches(nets["energy_net"], nets["initializer"], levels, 70, (2,), 1, batch_size=32)
    assert x.shape == (70, 2) and all(v.shape == (70, 2) for v in per_level)


def test_zero_steps_with_identity_initializer_is_ancestral_noise(toy_nets):
    """Fewer steps per level is allowed down to 0 (initializer only)."""
    config, nets, levels = toy_nets
    x = generate(nets["energy_net"], nets["initializer"], levels, 20, (2,), steps_per_level=0)
    assert x.shape == (20, 2)


def test_tweedie_modes_differ_by_a_factor_of_two():
    config = load_config(None, ["model.energy_net.base_channels=8", "model.energy_net.channel_mult=[1]",
                                "model.energy_net.blocks_per_resolution=1", "model.energy_net.temb_hidden=16"])
    torch.manual_seed(0)
    nets = build_nets(config, (1, 8, 8))
    energy = nets["energy_net"].eval()
    levels = build_levels(config)
    x = torch.randn(3, 1, 8, 8) * 0.5
    none = tweedie_denoise(energy, x, levels, Conditioning(), "none")
    faithful = tweedie_denoise(energy, x, levels, Conditioning(), "faithful")
    consistent = tweedie_denoise(energy, x, levels, Conditioning(), "consistent")
    assert torch.equal(none, x)
    base = x / levels.sqrt_alpha_bar[0]
    torch.testing.assert_close(faithful - base, 2 * (consistent - base), rtol=1e-4, atol=1e-6)


def test_guidance_and_composition_mix_conditional_energies(tiny_toy_config):
    tiny_toy_config.model.num_classes = 3
    torch.manual_seed(0)
    nets = {k: v.eval() for k, v in build_nets(tiny_toy_config, (2,)).items()}
    energy = nets["energy_net"]
    y, logsnr = torch.randn(5, 2), torch.zeros(5)
    c = torch.full((5,), 2)
    cond = Conditioning.guided(c, guidance_weight=0.5)
    mixed = sum(w * energy(y, logsnr, labels) for labels, w in cond.terms(5, y.device))
    expected = 1.5 * energy(y, logsnr, c) - 0.5 * energy(y, logsnr, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(mixed, expected)
    composed = Conditioning(labels=[torch.full((5,), 1), torch.full((5,), 3)], weights=[1.0, 1.0])
    x = generate(energy, nets["initializer"], build_levels(tiny_toy_config), 5, (2,), 1, cond=composed)
    assert x.shape == (5, 2)


def test_inpainting_keeps_known_coordinates(toy_nets):
    config, nets, levels = toy_nets
    observed = torch.tensor([[3.0, 0.0]]).repeat(40, 1)
    mask = torch.tensor([[1.0, 0.0]]).repeat(40, 1)
    x = generate(nets["energy_net"], nets["initializer"], levels, 40, (2,), 2, inpaint=Inpainting(observed, mask))
    # At level 0 the clamp is the observation plus σ̄_0 noise, divided back out of y-space.
    assert torch.allclose(x[:, 0], torch.full((40,), 3.0), atol=0.1)


def test_energy_score_shape(toy_nets):
    config, nets, levels = toy_nets
    assert energy_score(nets["energy_net"], torch.randn(7, 2), levels).shape == (7,)
