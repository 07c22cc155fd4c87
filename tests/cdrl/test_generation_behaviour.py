"""Generation does what §7-§8 say, checked against the spec's own numbers (§10), not against the code.

The sampler is replaced by a recorder (returns y⁰ + 1) so every level's inputs can be compared with what the
spec prescribes: which level each net is conditioned on, the Langevin anchor, the step sizes, the proposal
noise and the division by sqrt(m_t). Tweedie and guidance are checked with energies whose gradients are
known in closed form.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cdrl.generation as generation
from cdrl.config import load_config
from cdrl.factory import build_levels, build_nets
from cdrl.generation import Conditioning, generate, mixed_initializer, tweedie_denoise

# §10, per transition t = 1..6
ALPHA = [0.936416, 0.820161, 0.696915, 0.549303, 0.347824, 0.0592601]
SQRT_M = [math.sqrt(a) for a in ALPHA[:5]] + [1.0]  # m_K = 1
INIT_NOISE_STD = [0.00720281, 0.201127, 0.324725, 0.403713, 0.422368, 0.921787]
TOY_STEP = [0.130683, 0.219778, 0.285315, 0.347924, 0.418528, 0.502663]
TOY_QUADRATIC = [0.134294] * 5 + [0.0]  # c0·κ_t, switched off at the final level
LOGSNR = [9.8, 2.68882, 1.19688, 0.141071, -0.876073, -2.17239, -5.1]  # per level i = 0..6
TWEEDIE_FAITHFUL, TWEEDIE_CONSISTENT = 4.36023, 2.18012  # σ̄_0²/(c0·κ_1·σ_1²) and σ̄_0²/s_1² (images)
SQRT_ABAR0 = 0.999972


class Recorder:
    """Stands in for langevin_refine: records its inputs and returns y⁰ + 1."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, energy, y, anchor, step_size, quadratic_coeff, num_steps, step_multiplier=1.0, project=None,
                 final_step_noise=True):
        self.calls.append(dict(y0=y.clone(), anchor=anchor.clone(), step_size=step_size.clone(),
                               quadratic_coeff=quadratic_coeff.clone(), num_steps=num_steps))
        return y + 1.0


def record_inputs(module: nn.Module, method: str, log: list) -> None:
    """Wrap ``module.method`` so every call's (args, result) lands in ``log``."""
    original = getattr(module, method)

    def wrapped(*args):
        result = original(*args)
        log.append(([a.clone() if isinstance(a, torch.Tensor) else a for a in args], result))
        return result

    setattr(module, method, wrapped)


@pytest.fixture
def traced(tiny_toy_config, monkeypatch):
    torch.manual_seed(0)
    nets = {k: v.eval() for k, v in build_nets(tiny_toy_config, (2,)).items()}
    levels = build_levels(tiny_toy_config)
    recorder = Recorder()
    monkeypatch.setattr(generation, "langevin_refine", recorder)
    init_calls, energy_calls = [], []
    record_inputs(nets["initializer"], "forward", init_calls)
    record_inputs(nets["energy_net"], "condition", energy_calls)
    x0 = generate(nets["energy_net"], nets["initializer"], levels, 4000, (2,), steps_per_level=7)
    return recorder.calls, init_calls, energy_calls, x0


def test_each_net_is_conditioned_on_its_level(traced):
    """Sampling level i: the initializer sees λ_i (its input's level), the EBM λ_{i-1} (the level it models)."""
    _, init_calls, energy_calls, _ = traced
    assert len(init_calls) == len(energy_calls) == 6
    for k, i in enumerate(range(6, 0, -1)):
        torch.testing.assert_close(init_calls[k][0][1], torch.full((4000,), LOGSNR[i]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(energy_calls[k][0][0], torch.full((4000,), LOGSNR[i - 1]), rtol=1e-5, atol=1e-5)


def test_anchor_step_sizes_and_division_by_sqrt_m(traced):
    calls, init_calls, _, x0 = traced
    x = init_calls[0][0][0]
    assert x.std().item() == pytest.approx(1.0, abs=0.05)  # x_K ~ N(0, I)
    for k, t in enumerate(range(6, 0, -1)):
        call = calls[k]
        torch.testing.assert_close(call["anchor"], x)  # the chain is anchored at x_t, the level's input
        torch.testing.assert_close(call["step_size"], torch.full((4000,), TOY_STEP[t - 1]), rtol=1e-5, atol=0)
        torch.testing.assert_close(call["quadratic_coeff"], torch.full((4000,), TOY_QUADRATIC[t - 1]),
                                   rtol=1e-5, atol=1e-7)
        assert call["num_steps"] == 7
        x = (call["y0"] + 1.0) / SQRT_M[t - 1]  # x_{t-1} = y / sqrt(m_t)
        if k + 1 < 6:
            torch.testing.assert_close(init_calls[k + 1][0][0], x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x0, x, rtol=1e-5, atol=1e-5)


def test_proposal_noise_has_the_posterior_std(traced):
    """y⁰ = g(x_t) + sqrt(m_t·β̃_t)·ξ′ (§4)."""
    calls, init_calls, _, _ = traced
    for k, t in enumerate(range(6, 0, -1)):
        noise = calls[k]["y0"] - init_calls[k][1]
        assert noise.mean().item() == pytest.approx(0.0, abs=4 * INIT_NOISE_STD[t - 1] / math.sqrt(8000))
        assert noise.std().item() == pytest.approx(INIT_NOISE_STD[t - 1], rel=0.05)


class QuadraticEnergy(nn.Module):
    """F(y, λ, c) = -½·a(c)·‖y‖² with a(c) = scale·(1 + c): ∇_y F = -a(c)·y in closed form."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def condition(self, logsnr, labels):
        a = torch.full_like(logsnr, self.scale) if labels is None else self.scale * (1 + labels.float())
        return a

    def energy(self, y, a):
        return -0.5 * a * y.flatten(1).pow(2).sum(1)

    def forward(self, y, logsnr, labels=None):
        return self.energy(y, self.condition(logsnr, labels))


def image_levels():
    return build_levels(load_config(None, ["langevin.step_rule=image", "langevin.c0=2e-4"]))


@pytest.mark.parametrize(("mode", "coefficient"), [("faithful", TWEEDIE_FAITHFUL), ("consistent", TWEEDIE_CONSISTENT)])
def test_tweedie_matches_the_closed_form(mode, coefficient):
    """x_out = (x + σ̄_0²·∇_x F(sqrt(α_1)x, λ_0)/d) / sqrt(ā_0), here = x·(1 − coeff·a·α_1)/sqrt(ā_0)."""
    x = torch.randn(5, 3, 4, 4)
    out = tweedie_denoise(QuadraticEnergy(0.1), x, image_levels(), Conditioning(), mode)
    torch.testing.assert_close(out, x * (1 - coefficient * 0.1 * ALPHA[0]) / SQRT_ABAR0, rtol=1e-4, atol=1e-6)


def test_guided_tweedie_mixes_the_conditional_energies():
    """F_w = (1+w)·F(c) − w·F(∅) in the Tweedie step too (§8): a_w = 0.1·((1+w)(1+c) − w)."""
    x = torch.randn(6, 3, 4, 4)
    labels, w = torch.full((6,), 2), 0.5
    out = tweedie_denoise(QuadraticEnergy(0.1), x, image_levels(), Conditioning.guided(labels, w), "faithful")
    a_w = 0.1 * ((1 + w) * 3 - w)
    torch.testing.assert_close(out, x * (1 - TWEEDIE_FAITHFUL * a_w * ALPHA[0]) / SQRT_ABAR0, rtol=1e-4, atol=1e-6)


class LabelShift(nn.Module):
    """g(x, λ, c) = x + c: the guided proposal is x + (1 + w)·c."""

    def forward(self, x, logsnr, labels=None):
        return x if labels is None else x + labels.float().view(-1, *([1] * (x.dim() - 1)))


def test_guided_initializer_in_generation(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(generation, "langevin_refine", recorder)
    levels = build_levels(load_config(None, ["langevin.step_rule=toy", "langevin.c0=1e-3"]))
    labels, w = torch.full((3000,), 3), 0.5
    x = torch.randn(3000, 2)
    torch.testing.assert_close(mixed_initializer(LabelShift(), x, torch.zeros(3000), Conditioning.guided(labels, w)),
                               x + (1 + w) * 3.0)
    generate(QuadraticEnergy(0.1), LabelShift(), levels, 3000, (2,), 1, cond=Conditioning.guided(labels, w))
    last = recorder.calls[-1]  # level 1: proposal noise std 0.0072
    shift = (last["y0"] - last["anchor"]).mean(0)
    torch.testing.assert_close(shift, torch.full((2,), (1 + w) * 3.0), rtol=0, atol=0.01)
