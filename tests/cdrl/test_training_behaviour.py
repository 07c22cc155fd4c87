"""One training step does what §3, §6 and §8 say, checked against the spec's numbers (§10).

The Langevin sampler inside the objective is replaced by a recorder (it returns its start unchanged), so
the per-example step sizes, the level the EBM is conditioned on and the labels each pass sees can be read.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cdrl.objectives.cdrl as cdrl_objective
from cdrl.config import load_config
from cdrl.factory import build_levels, build_nets, build_trainer
from cdrl.objectives.cdrl import CooperativeRecoveryLikelihood
from tests.cdrl.test_generation_behaviour import LOGSNR, record_inputs

# §10, images (CIFAR / I32): s_t and c_t = c0·κ_t (0 at the final level), t = 1..6
IMAGE_STEP = [0.00504319, 0.0493657, 0.0885576, 0.128474, 0.17157, 0.218817]
IMAGE_QUADRATIC = [0.0002, 0.00677544, 0.0129377, 0.0183111, 0.0225678, 0.0]

TINY_IMAGE = ["model.energy_net.base_channels=8", "model.energy_net.channel_mult=[1]",
              "model.energy_net.blocks_per_resolution=1", "model.energy_net.temb_hidden=16",
              "model.energy_net.temb_dim=16", "model.initializer.base_channels=8", "model.initializer.channel_mult=[1]",
              "model.initializer.num_res_blocks=1", "model.initializer.attention_resolutions=[]",
              "model.initializer.groups=4", "model.initializer.temb_dim=16", "model.initializer.temb_hidden=16",
              "langevin.step_rule=image", "langevin.c0=2e-4", "langevin.num_steps=2"]


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, energy, y, anchor, step_size, quadratic_coeff, num_steps, step_multiplier=1.0, project=None):
        self.calls.append(dict(step_size=step_size.clone(), quadratic_coeff=quadratic_coeff.clone()))
        return y.detach()


def image_step(monkeypatch, overrides=(), labels=None, batch=96):
    config = load_config(None, [*TINY_IMAGE, *overrides])
    torch.manual_seed(0)
    nets = build_nets(config, (1, 8, 8))
    recorder = Recorder()
    monkeypatch.setattr(cdrl_objective, "langevin_refine", recorder)
    condition_calls, init_calls, energy_calls = [], [], []
    record_inputs(nets["energy_net"], "condition", condition_calls)
    record_inputs(nets["initializer"], "forward", init_calls)
    record_inputs(nets["energy_net"], "forward", energy_calls)
    trainer = build_trainer(config, nets, build_levels(config))
    trainer.step(torch.rand(batch, 1, 8, 8) * 2 - 1, labels)
    return recorder.calls[0], condition_calls[0], init_calls[0], energy_calls[0]


def level_of(step_size: torch.Tensor) -> torch.Tensor:
    """Each example's transition t, read off its Langevin step size (must be one of the spec's six)."""
    distance = (step_size[:, None] - torch.tensor(IMAGE_STEP)[None]).abs() / torch.tensor(IMAGE_STEP)
    assert distance.min(1).values.max() < 1e-4, "a step size that is not one of §10's image step sizes"
    return distance.argmin(1) + 1


def test_image_step_rule_and_ebm_level_inside_a_training_step(monkeypatch):
    langevin, condition, _, _ = image_step(monkeypatch)
    t = level_of(langevin["step_size"])
    assert set(t.tolist()) == {1, 2, 3, 4, 5, 6}
    torch.testing.assert_close(langevin["quadratic_coeff"], torch.tensor(IMAGE_QUADRATIC)[t - 1], rtol=1e-4, atol=1e-8)
    # The EBM inside Langevin is conditioned on λ_{t-1}, the level it models (§1).
    torch.testing.assert_close(condition[0][0], torch.tensor(LOGSNR)[t - 1], rtol=1e-5, atol=1e-5)


def test_label_dropout_is_one_draw_shared_by_every_pass(monkeypatch):
    """Labels become 1..C, each replaced by the null label 0 with p_cond; the same (possibly dropped) label
    feeds the initializer, Langevin and the positive and negative energies (§8)."""
    labels = torch.arange(10).repeat(20)
    _, condition, init, energy = image_step(monkeypatch, ["model.num_classes=10", "train.label_dropout=0.3"],
                                            labels=labels, batch=200)
    seen = init[0][2]
    torch.testing.assert_close(condition[0][1], seen)
    torch.testing.assert_close(energy[0][2], torch.cat([seen, seen]))
    dropped = seen == 0
    assert 0.15 < dropped.float().mean() < 0.45  # p_cond = 0.3 over 200 labels
    torch.testing.assert_close(seen[~dropped], labels[~dropped] + 1)


def test_label_dropout_rate_matches_p_cond():
    objective = CooperativeRecoveryLikelihood(build_levels(load_config(None)), 0, label_dropout=0.1)
    torch.manual_seed(0)
    assert (objective.net_labels(torch.zeros(40_000, dtype=torch.long)) == 0).float().mean() == pytest.approx(0.1, abs=0.006)


def spectral_norm_modules(net):
    return [m for m in net.modules() if hasattr(m, "parametrizations") and "weight" in m.parametrizations]


def test_one_spectral_norm_power_iteration_per_training_step(tiny_toy_config):
    """u ← normalize(W·normalize(Wᵀu)) exactly once per step, on the weights before the update (§6)."""
    torch.manual_seed(0)
    nets = build_nets(tiny_toy_config, (2,))
    trainer = build_trainer(tiny_toy_config, nets, build_levels(tiny_toy_config))
    modules = spectral_norm_modules(nets["energy_net"])
    assert modules
    norms = [m.parametrizations.weight[0] for m in modules]
    weights = [m.parametrizations.weight.original.detach().flatten(1).clone() for m in modules]
    before = [sn._u.clone() for sn in norms]
    trainer.step(torch.randn(64, 2) * 4)
    for sn, w, u0 in zip(norms, weights, before):
        v = F.normalize(w.T @ u0, dim=0, eps=sn.eps)
        torch.testing.assert_close(sn._u, F.normalize(w @ v, dim=0, eps=sn.eps), rtol=1e-5, atol=1e-6)
