"""Noise schedule (§1) and every per-level constant, against the reference tables of §10."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cdrl.schedule import NoiseSchedule, cosine_logsnr

# §10, K = 6, λ ∈ [-5.1, 9.8].
LOGSNR = [9.8, 2.68882, 1.19688, 0.141071, -0.876073, -2.17239, -5.1]
ALPHA_BAR = [0.999945, 0.936364, 0.767969, 0.535209, 0.293992, 0.102258, 0.0060598]
SIGMA_BAR = [0.00744638, 0.252262, 0.481696, 0.681756, 0.840243, 0.947493, 0.996965]
TIME_INPUT = [0.00474055, 0.162349, 0.319958, 0.477566, 0.635175, 0.792784, 0.950392]
ALPHA = [0.936416, 0.820161, 0.696915, 0.549303, 0.347824, 0.0592601]
SIGMA = [0.252159, 0.424074, 0.550532, 0.67134, 0.807574, 0.969917]
BETA_TILDE = [5.54033e-05, 0.0493222, 0.151305, 0.29671, 0.512888, 0.849691]
INIT_STD = [0.00720281, 0.201127, 0.324725, 0.403713, 0.422368, 0.921787]
WEIGHT = [1, 0.594612, 0.458029, 0.375606, 0.312243, 0.25998]
TOY_S = [0.130683, 0.219778, 0.285315, 0.347924, 0.418528, 0.502663]
IMG_S = [0.00504319, 0.0493657, 0.0885576, 0.128474, 0.17157, 0.218817]
IMG_C = [0.0002, 0.00677544, 0.0129377, 0.0183111, 0.0225678, 0.0]  # 0 at the final level


def close(actual: torch.Tensor, expected: list[float], rel: float = 1e-5) -> None:
    np.testing.assert_allclose(actual.numpy(), np.array(expected), rtol=rel, atol=1e-12)


def test_reference_tables_of_section_10():
    s = NoiseSchedule(6, -5.1, 9.8)
    close(s.logsnr, LOGSNR)
    close(s.alpha_bar, ALPHA_BAR)
    close(s.sigma_bar, SIGMA_BAR)
    close(s.time_input, TIME_INPUT)
    close(s.alpha[1:], ALPHA)
    close(s.sigma[1:], SIGMA)
    close(s.beta_tilde[1:], BETA_TILDE)
    close(s.init_noise_std[1:], INIT_STD)
    close(s.loss_weight[1:], WEIGHT)
    close(s.scale_sq[1:], ALPHA[:-1] + [1.0])
    toy = s.langevin("toy", 1e-3)
    close(toy.step_size[1:], TOY_S)
    close(toy.quadratic_coeff[1:], [0.134294] * 5 + [0.0])
    image = s.langevin("image", 2e-4)
    close(image.step_size[1:], IMG_S)
    close(image.quadratic_coeff[1:], IMG_C)
    assert s.is_final.tolist() == [False] * 6 + [True]


def reference_constants(K: int, lmin: float, lmax: float) -> dict[str, np.ndarray]:
    """An independent float64 derivation of §1-§4 written with numpy, loops and no shared code."""
    b = math.atan(math.exp(-lmax / 2))
    a = math.atan(math.exp(-lmin / 2)) - b
    lam = np.array([-2 * math.log(math.tan(a * i / K + b)) for i in range(K + 1)])
    abar = 1 / (1 + np.exp(-lam))
    sbar = np.sqrt(1 / (1 + np.exp(lam)))
    out = {k: [] for k in ("alpha", "sigma", "btil", "init", "w", "s_toy", "s_img", "c_img")}
    sig1 = math.sqrt(1 - abar[1] / abar[0])
    for t in range(1, K + 1):
        alpha = abar[t] / abar[t - 1]
        beta = 1 - alpha
        m = 1.0 if t == K else alpha
        btil = beta * (1 - abar[t - 1]) / (1 - abar[t])
        out["alpha"].append(alpha)
        out["sigma"].append(math.sqrt(beta))
        out["btil"].append(btil)
        out["init"].append(math.sqrt(m * btil))
        out["w"].append(sig1 / math.sqrt(beta))
        out["s_toy"].append(math.sqrt(2e-3 / sbar[0] * beta))
        out["s_img"].append(math.sqrt(4e-4 * sbar[t - 1] / sbar[0] * beta))
        out["c_img"].append(0.0 if t == K else 2e-4 * sbar[t - 1] / sbar[0])
    return {"logsnr": lam, "alpha_bar": abar, **{k: np.array(v) for k, v in out.items()}}


@pytest.mark.parametrize(("K", "lmin", "lmax"), [(6, -5.1, 9.8), (3, -5.1, 9.8), (10, -8.0, 12.0), (1, -3.0, 4.0), (20, -6.0, 8.5)])
def test_constants_for_any_K_and_range(K, lmin, lmax):
    s = NoiseSchedule(K, lmin, lmax)
    ref = reference_constants(K, lmin, lmax)
    close(s.logsnr, ref["logsnr"])
    close(s.alpha_bar, ref["alpha_bar"])
    close(s.alpha[1:], ref["alpha"])
    close(s.sigma[1:], ref["sigma"])
    close(s.beta_tilde[1:], ref["btil"])
    close(s.init_noise_std[1:], ref["init"])
    close(s.loss_weight[1:], ref["w"])
    close(s.langevin("toy", 1e-3).step_size[1:], ref["s_toy"])
    close(s.langevin("image", 2e-4).step_size[1:], ref["s_img"])
    close(s.langevin("image", 2e-4).quadratic_coeff[1:], ref["c_img"])
    assert s.logsnr[0] == pytest.approx(lmax) and s.logsnr[-1] == pytest.approx(lmin)


def test_langevin_targets_the_recovery_variance():
    """c_t / s_t² = 1/(2σ_t²): the chain's quadratic term is exactly the recovery likelihood's (§3)."""
    s = NoiseSchedule()
    for rule, c0 in (("toy", 1e-3), ("image", 2e-4)):
        lc = s.langevin(rule, c0)
        ratio = lc.quadratic_coeff[1:-1] / lc.step_size[1:-1] ** 2
        close(ratio, (1 / (2 * s.sigma[1:-1] ** 2)).tolist())


def test_step_multiplier_scales_the_step_only():
    s = NoiseSchedule()
    base, doubled = s.langevin("image", 2e-4), s.langevin("image", 2e-4, step_multiplier=2.0)
    close(doubled.step_size[1:], (2 * base.step_size[1:]).tolist())
    close(doubled.quadratic_coeff[1:], base.quadratic_coeff[1:].tolist())


def test_cosine_logsnr_endpoints_and_monotone():
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    lam = cosine_logsnr(u, -5.1, 9.8)
    assert lam[0] == pytest.approx(9.8) and lam[-1] == pytest.approx(-5.1)
    assert torch.all(lam[1:] < lam[:-1])


@pytest.mark.parametrize(("kwargs", "match"), [({"num_levels": 0}, "num_levels"), ({"logsnr_min": 3, "logsnr_max": 2}, "logsnr_min")])
def test_bad_schedule_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoiseSchedule(**kwargs)


def test_unknown_step_rule():
    with pytest.raises(ValueError, match="step_rule"):
        NoiseSchedule().langevin("bogus", 1e-3)


def test_level_table_on_device_dtype():
    table = NoiseSchedule().table("image", 2e-4)
    assert table.logsnr.dtype == torch.float32 and table.step_size.shape == (7,)
    assert table.scale[6] == 1.0
