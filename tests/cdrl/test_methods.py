"""The classic EBM methods and DRL behind the objective interface: each trains and samples on the toy and on
digits; exact and sliced score matching agree; DSM's optimum on a Gaussian is the true score; MALA targets
its density; the replay buffer survives checkpoint and resume."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cdrl.checkpoint import load_checkpoint, save_checkpoint
from cdrl.config import ConfigError, load_config
from cdrl.data import load_builtin
from cdrl.factory import build_levels, build_sampler
from cdrl.objectives.learned_sampler import generator_score
from cdrl.objectives.score_matching import (
    denoising_score_matching_loss, exact_score_matching_loss, sliced_score_matching_loss,
)
from cdrl.sgld import sgld
from pipeline.evaluation import Evaluator, evaluate_trainer
from pipeline.loop import LoopHooks, TrainingData, WorkerContext, run_training
from tests.conftest import TINY_TOY

METHODS = ["drl", "mcmc", "mcmc_short_run", "learned_sampler", "exact_sm", "sliced_sm", "dsm", "multiscale_dsm"]
CHEAP = ["mcmc.num_steps=2", "mcmc.sample_steps=2", "mcmc.buffer_size=100", "score_matching.sample_steps=4",
         "score_matching.num_scales=2", "langevin.num_steps=2", "learned_sampler.hidden=16", "train.iterations=3",
         "train.log_every=1", "eval.num_samples=8", "generation.batch_size=8", "eval.plot=false"]
TINY_DIGITS = ["data.name=digits", "train.batch_size=8", "model.energy_net.base_channels=8",
               "model.energy_net.blocks_per_resolution=1", "model.energy_net.temb_hidden=32", "model.energy_net.temb_dim=16",
               "model.energy_net.channel_mult=[1]", "generation.tweedie=none", "eval.extractor=none"]


def _data(name: str) -> TrainingData:
    x, _ = load_builtin(name, 256)
    return TrainingData(torch.from_numpy(x[:256]))


@pytest.mark.parametrize("dataset", ["8squares", "digits"])
@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_and_samples(method, dataset, tmp_path):
    extra = TINY_TOY if dataset == "8squares" else TINY_DIGITS
    config = load_config(f"pipeline/configs/{method}.yaml", [*extra, *CHEAP, f"run.output_dir={tmp_path}", "run.name=m"])
    data = _data(dataset)
    if method == "exact_sm" and dataset == "digits":  # 64 dimensions: refused, with the alternatives named
        with pytest.raises(ValueError, match="sliced_sm or dsm"):
            run_training(config, data, WorkerContext(), LoopHooks())
        return
    logged = []
    result = run_training(config, data, WorkerContext(), LoopHooks(log=lambda s, m: logged.append(m)))
    assert result.trainer.step_count == 3 and len(logged) == 3
    assert all(math.isfinite(v) for m in logged for k, v in m.items() if k.startswith("loss/"))
    assert {f"loss/{n}" for n in result.trainer.objective.network_names} <= set(logged[-1])
    metrics, artifacts = evaluate_trainer(Evaluator(config, data.item_shape), result.trainer, tmp_path, 3, True)
    samples = torch.from_numpy(__import__("numpy").load(artifacts["samples"]))
    assert samples.shape == (8, *data.item_shape) and metrics["eval/sample_nan_fraction"] == 0.0


class Quadratic(nn.Module):
    """F(x) = −½ a·‖x − m‖²: the score −a·(x − m) is that of N(m, I/a). The energy-net signature of cdrl.nets."""

    def __init__(self, dim: int, a: float = 1.0, m: float = 0.0):
        super().__init__()
        self.log_a = nn.Parameter(torch.tensor(math.log(a)))
        self.m = nn.Parameter(torch.full((dim,), m))
        self.w = nn.Parameter(torch.zeros(dim))  # a cubic term, so that the Hessian depends on x

    def forward(self, x, logsnr=None, labels=None):
        return -0.5 * self.log_a.exp() * (x - self.m).pow(2).sum(1) + (self.w * x.pow(3)).sum(1)


def test_exact_and_sliced_score_matching_agree_in_expectation():
    torch.manual_seed(0)
    x = torch.randn(64, 3) * 1.5 + 0.5
    model = Quadratic(3, a=0.7, m=0.2)
    with torch.no_grad():
        model.w.copy_(torch.tensor([0.05, -0.03, 0.02]))
    logsnr = torch.zeros(64)
    exact = exact_score_matching_loss(model, x, logsnr)
    exact_grads = torch.autograd.grad(exact, list(model.parameters()))
    sliced = sliced_score_matching_loss(model, x, logsnr, num_projections=4000)
    sliced_grads = torch.autograd.grad(sliced, list(model.parameters()))
    assert float(sliced.detach()) == pytest.approx(float(exact.detach()), rel=0.02)
    for e, s in zip(exact_grads, sliced_grads):
        torch.testing.assert_close(s, e, rtol=0.05, atol=0.01)
    # The exact loss is minimised by the data's own score: N(0.5, 1.5²) in every coordinate.
    true = Quadratic(3, a=1 / 1.5**2, m=0.5)
    assert float(exact_score_matching_loss(true, x, logsnr).detach()) < float(exact.detach())


def test_denoising_score_matching_optimum_is_the_noisy_gaussian_score():
    """Data N(1, 0.5²), noise σ = 0.3: the DSM optimum is the score of N(1, 0.5² + 0.3²)."""
    torch.manual_seed(0)
    model = Quadratic(2)
    model.w.requires_grad_(False)
    optimizer = torch.optim.Adam([model.log_a, model.m], lr=0.05)
    sigma = torch.full((4096,), 0.3)
    for _ in range(400):
        x = torch.randn(4096, 2) * 0.5 + 1.0
        loss = denoising_score_matching_loss(model, x, torch.zeros(4096), sigma)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(model.log_a.exp()) == pytest.approx(1 / (0.5**2 + 0.3**2), rel=0.05)
    torch.testing.assert_close(model.m.detach(), torch.ones(2), atol=0.03, rtol=0)


def test_mala_and_sgld_sample_a_gaussian_target():
    torch.manual_seed(0)
    energy = lambda x: -0.5 * (x - 2.0).pow(2).sum(1) / 0.25  # noqa: E731  N(2, 0.5²)
    start = torch.zeros(4000, 2)
    x, acceptance = sgld(energy, start, 300, step_size=0.05, noise_std=0.0, mala=True)
    assert 0.5 < acceptance < 1.0
    assert float(x.mean()) == pytest.approx(2.0, abs=0.03) and float(x.std()) == pytest.approx(0.5, rel=0.05)
    y, _ = sgld(energy, start, 300, step_size=0.01, noise_std=math.sqrt(0.02))
    assert float(y.std()) == pytest.approx(0.5, rel=0.08)
    z, _ = sgld(energy, start, 300, step_size=0.01, noise_std=math.sqrt(0.02), final_step_noise=False)
    assert float(z.std()) < float(y.std())


def test_generator_score_estimate_matches_a_wide_gaussian():
    """q = N(0, I)·g + σ-noise with g(z) = z: the leave-one-out estimate tends to −x/(1 + σ²)."""
    torch.manual_seed(0)
    means = torch.randn(4000, 1)
    x = torch.tensor([[-1.0], [0.0], [1.0]])
    score = generator_score(torch.cat([x, means[3:]]), torch.cat([torch.full((3, 1), 50.0), means[3:]]), 0.5)[:3]
    torch.testing.assert_close(score, -x / 1.25, atol=0.1, rtol=0)


def _mcmc_config(tmp_path, iterations):
    return load_config("pipeline/configs/mcmc.yaml", [*TINY_TOY, "mcmc.num_steps=2", "mcmc.buffer_size=50",
                                                      "mcmc.reinit_prob=0.2", f"train.iterations={iterations}",
                                                      f"run.output_dir={tmp_path}"])


def test_replay_buffer_survives_checkpoint_and_resume(tmp_path):
    """N steps, checkpoint through a file, resume, N more == 2N straight: nets and buffer (it feeds the chains)."""
    data = _data("8squares")
    straight = run_training(_mcmc_config(tmp_path, 8), data, WorkerContext(), LoopHooks()).trainer
    saved = {}
    run_training(_mcmc_config(tmp_path, 4), data, WorkerContext(), LoopHooks(checkpoint=lambda s, c, f: saved.setdefault(s, c)))
    path = save_checkpoint(saved[4], tmp_path / "ckpt.pt")
    assert load_checkpoint(path)["trainer"]["objective"]["replay_buffer"]["chains"][0].shape == (50, 2)
    resumed = run_training(_mcmc_config(tmp_path, 8), data, WorkerContext(), LoopHooks(), resume=load_checkpoint(path)).trainer
    assert torch.equal(resumed.objective.buffer.chains, straight.objective.buffer.chains)
    for a, b in zip(straight.nets["energy_net"].parameters(), resumed.nets["energy_net"].parameters()):
        assert torch.equal(a, b)
    # Without the buffer the resumed chains start elsewhere and the runs part.
    state = load_checkpoint(path)
    del state["trainer"]["objective"]
    forgetful = run_training(_mcmc_config(tmp_path, 8), data, WorkerContext(), LoopHooks(), resume=state).trainer
    assert not torch.equal(forgetful.objective.buffer.chains, straight.objective.buffer.chains)


def test_unconditional_methods_refuse_labels(tmp_path):
    with pytest.raises(ConfigError, match="method"):
        load_config("pipeline/configs/dsm.yaml", ["model.num_classes=10"])
    config = load_config("pipeline/configs/dsm.yaml", TINY_TOY)
    from cdrl.factory import build_nets
    from cdrl.generation import Conditioning

    with pytest.raises(ValueError, match="unconditional"):
        build_sampler(config, build_levels(config)).sample(build_nets(config, (2,)), 2, (2,),
                                                           cond=Conditioning.guided(torch.ones(2, dtype=torch.long), 0.0))
