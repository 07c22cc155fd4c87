"""Performance switches (cdrl/perf.py) leave results unchanged within stated tolerances.

Same seed, same tiny nets, a short training run with the switch off and on. Exact-arithmetic switches
(fused optimizers, torch.compile, distinct-row conditioning) must agree to float32 rounding (relative
update difference < 1e-3), channels_last to < 1e-2 (other conv algorithms). bf16 autocast must keep the
Langevin drift within 5 % (toy) / 10 % (image) and the energies within 5 % of float32, the state and the
energies float32, and 4 training steps' updates within 5 % of the float32 updates.
"""
from __future__ import annotations

import copy

import pytest
import torch

from cdrl.config import PerfConfig, load_config
from cdrl.factory import build_levels, build_nets, build_trainer
from cdrl.langevin import langevin_refine
from cdrl.nets.image_energy import ImageEnergyNet
from cdrl.nets.toy import ToyEnergyNet
from cdrl.perf import PerfSettings
from tests.conftest import TINY_TOY

STEPS = 4
TINY_IMAGE = [
    "model.energy_net.base_channels=8", "model.energy_net.channel_mult=[1, 2]", "model.energy_net.blocks_per_resolution=1",
    "model.energy_net.temb_dim=16", "model.energy_net.temb_hidden=32", "model.initializer.base_channels=8",
    "model.initializer.channel_mult=[1]", "model.initializer.num_res_blocks=1", "model.initializer.groups=4",
    "model.initializer.attention_resolutions=[]", "model.initializer.temb_dim=16", "model.initializer.temb_hidden=32",
    "langevin.num_steps=2", "train.batch_size=8", "train.energy_warmup=1", "train.initializer_warmup=1",
]
OFF = ["perf.autocast=fp32", "perf.channels_last=false", "perf.compile=false", "perf.cuda_graphs=false",
       "perf.fused_optimizer=false"]


def train_briefly(overrides: list[str], shape: tuple[int, ...]) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Parameters after STEPS training steps from seed 0, and the per-step energy losses."""
    config = load_config(None, overrides)
    torch.manual_seed(0)
    trainer = build_trainer(config, build_nets(config, shape), build_levels(config))
    data = torch.randn(config.train.batch_size, *shape, generator=torch.Generator().manual_seed(1))
    losses = []
    for step in range(STEPS):
        torch.manual_seed(100 + step)
        losses.append(float(trainer.step(data)["energy_loss"]))
    params = {f"{name}.{k}": v.detach().clone() for name, net in trainer.nets.items()
              for k, v in net.state_dict().items()}
    return params, losses


def relative_update_difference(reference: dict, other: dict, start: dict) -> dict[str, float]:
    """Per network: ‖Δ_other − Δ_ref‖ / ‖Δ_ref‖ over all its parameters and buffers, Δ = state − initial state.

    One norm per network: Adam normalises each coordinate's step, so a coordinate whose gradient is ~0
    flips sign on any rounding difference; per-coordinate comparisons would only measure that.
    """
    out = {}
    for net in ("energy_net", "initializer"):
        keys = [k for k in reference if k.startswith(net + ".")]
        delta = torch.cat([(reference[k] - start[k]).flatten().float() for k in keys])
        diff = torch.cat([(other[k] - reference[k]).flatten().float() for k in keys])
        out[net] = float(diff.norm() / delta.norm())
    return out


def initial_state(overrides: list[str], shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    config = load_config(None, overrides)
    torch.manual_seed(0)
    return {f"{name}.{k}": v.detach().clone() for name, net in build_nets(config, shape).items()
            for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def toy_runs():
    base = TINY_TOY + OFF
    return base, initial_state(base, (2,)), train_briefly(base, (2,))


@pytest.mark.parametrize("switch", ["perf.fused_optimizer=true", "perf.compile=true"])
def test_exact_switches_match_float32_training(toy_runs, switch, monkeypatch):
    # torch.compile: graph capture and compiled autograd as on the GPU, without inductor's minutes of C++
    # code generation on 2 cores (inductor itself matched eager to 2e-6 over 15 Langevin steps, BENCHMARKS.md).
    monkeypatch.setattr("cdrl.perf.COMPILE_BACKEND", "aot_eager")
    base, start, (reference, ref_losses) = toy_runs
    params, losses = train_briefly(base + [switch], (2,))
    assert losses == pytest.approx(ref_losses, rel=1e-4, abs=1e-6)
    assert max(relative_update_difference(reference, params, start).values()) < 1e-3


def test_channels_last_matches_on_image_nets():
    base = TINY_IMAGE + OFF
    reference, ref_losses = train_briefly(base, (3, 8, 8))
    params, losses = train_briefly(base + ["perf.channels_last=true"], (3, 8, 8))
    assert losses == pytest.approx(ref_losses, rel=1e-3, abs=1e-5)
    assert max(relative_update_difference(reference, params, initial_state(base, (3, 8, 8))).values()) < 1e-2


def test_bf16_autocast_training_tracks_float32(toy_runs):
    base, start, (reference, ref_losses) = toy_runs
    params, losses = train_briefly(base + ["perf.autocast=bf16"], (2,))
    assert max(relative_update_difference(reference, params, start).values()) < 0.05  # 0.018 seen
    assert losses == pytest.approx(ref_losses, rel=0.05, abs=1e-4)


@pytest.mark.parametrize(("make_net", "tolerance"), [  # measured at seed 0: toy 0.043, image 0.040
    (lambda: ToyEnergyNet(base_width=32, temb_hidden=64), 0.08),  # 0.01-0.057 over other initialisations
    (lambda: ImageEnergyNet(in_channels=3, base_channels=16, channel_mult=(1, 2), blocks_per_resolution=1,
                            temb_hidden=32), 0.1),
], ids=["toy", "image"])
def test_bf16_langevin_drift_tracks_float32(make_net, tolerance):
    torch.manual_seed(0)  # the nets' initialisation, not the collection order, decides the measured drift
    net = make_net().eval()
    shape = (256, 2) if isinstance(net, ToyEnergyNet) else (16, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    y = 4 * torch.randn(*shape, generator=generator) if len(shape) == 2 else torch.randn(*shape, generator=generator)
    logsnr = torch.linspace(-5, 9, shape[0])
    condition = net.condition(logsnr)

    def drift(autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            cond = net.condition(logsnr) if autocast else condition
            y_ = y.clone().requires_grad_(True)
            energy = net.energy(y_, cond)
            (grad,) = torch.autograd.grad(energy.sum(), y_)
        return energy, grad

    energy32, grad32 = (t.detach() for t in drift(False))
    energy16, grad16 = (t.detach() for t in drift(True))
    assert energy16.dtype == torch.float32 and grad16.dtype == torch.float32
    assert float((grad16 - grad32).norm() / grad32.norm()) < tolerance
    assert float((energy16 - energy32).abs().max() / energy32.abs().max().detach()) < 0.05


def test_langevin_state_stays_float32_under_autocast():
    net = ToyEnergyNet(base_width=16, temb_hidden=32).eval()
    condition = net.condition(torch.zeros(8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = langevin_refine(lambda v: net.energy(v, condition), torch.randn(8, 2), torch.zeros(8, 2),
                            step_size=torch.full((8,), 0.1), quadratic_coeff=torch.full((8,), 0.01), num_steps=2)
    assert y.dtype == torch.float32


def test_distinct_row_conditioning_equals_per_example():
    net = ToyEnergyNet(base_width=16, temb_hidden=32, num_classes=3).eval()
    logsnr = torch.tensor([1.0, 2.0, 1.0, 3.0, 2.0, 1.0])
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    temb = net.time_embedding(logsnr, labels)
    per_example = [block.time_features(temb) for block in net.blocks]
    for got, want in zip(net.condition(logsnr, labels), per_example):
        torch.testing.assert_close(got, want)


def test_auto_resolves_to_all_on_for_cuda_and_measured_defaults_on_cpu(monkeypatch):
    cuda = PerfSettings.resolve(PerfConfig(), "cuda")
    assert (cuda.autocast_dtype, cuda.channels_last, cuda.compile, cuda.cuda_graphs, cuda.fused_optimizer) == (
        torch.bfloat16, True, True, True, True)
    monkeypatch.setattr("cdrl.perf.cpu_has_native_bf16", lambda: False)
    cpu = PerfSettings.resolve(PerfConfig(), "cpu")
    assert cpu == PerfSettings(device_type="cpu")
    monkeypatch.setattr("cdrl.perf.cpu_has_native_bf16", lambda: True)
    assert PerfSettings.resolve(PerfConfig(), "cpu").autocast_dtype == torch.bfloat16
    assert PerfSettings.resolve(PerfConfig(autocast="fp32"), "cpu").autocast_dtype is None
    assert not PerfSettings.resolve(PerfConfig(cuda_graphs=True), "cpu").cuda_graphs  # CUDA only


def test_switches_reject_unknown_values():
    from cdrl.config import ConfigError

    with pytest.raises(ConfigError, match="perf.compile"):
        load_config(None, ["perf.compile=maybe"])
    with pytest.raises(ConfigError, match="perf.threads"):
        load_config(None, ["perf.threads=-1"])
    assert copy.deepcopy(load_config(None, ["perf.autocast=fp32", "perf.compile=off"]).perf) == PerfConfig(
        autocast="fp32", compile=False)
