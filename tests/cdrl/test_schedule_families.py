"""Schedule families (cosine, linear-in-logSNR, DRL §14): reference values and the step-size rules on each."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cdrl.config import ConfigError, load_config
from cdrl.factory import build_levels, build_schedule
from cdrl.schedule import NoiseSchedule, drl_logsnr, linear_logsnr

# §14, T = 6: per-level sqrt(alpha) ("a"), per-level sigma, and the logSNR of the cumulative levels.
DRL_A = [0.99995, 0.946167, 0.85629, 0.774796, 0.700918, 0.633956, 0.0227765]
DRL_SIGMA = [0.01, 0.32368, 0.516495, 0.632211, 0.713242, 0.773369, 0.999741]
DRL_LOGSNR = [9.21024, 2.14437, 0.647057, -0.430482, -1.42697, -2.47267, -10.1177]
# Linear in logSNR, K = 6 over [-5.1, 9.8]: steps of -14.9/6.
LINEAR_LOGSNR = [9.8, 7.316667, 4.833333, 2.35, -0.133333, -2.616667, -5.1]
FAMILIES = [("cosine", 6, -5.1, 9.8), ("linear", 6, -5.1, 9.8), ("linear", 4, -7.0, 12.0), ("drl", 6, -5.1, 9.8),
            ("drl", 3, -5.1, 9.8), ("drl", 10, -5.1, 9.8)]


def close(actual: torch.Tensor, expected, rel: float = 1e-5) -> None:
    np.testing.assert_allclose(actual.numpy(), np.asarray(expected, dtype=np.float64), rtol=rel, atol=1e-12)


def test_cosine_is_the_default_and_unchanged():
    default, explicit = NoiseSchedule(), NoiseSchedule(6, -5.1, 9.8, "cosine")
    assert default.family == "cosine" and load_config().schedule.family == "cosine"
    close(default.logsnr, [9.8, 2.68882, 1.19688, 0.141071, -0.876073, -2.17239, -5.1])
    torch.testing.assert_close(default.logsnr, explicit.logsnr, rtol=0, atol=0)


def test_linear_reference_values():
    s = NoiseSchedule(6, -5.1, 9.8, "linear")
    close(s.logsnr, LINEAR_LOGSNR)
    assert np.allclose(np.diff(s.logsnr.numpy()), -14.9 / 6)
    close(linear_logsnr(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), -3.0, 5.0), [5.0, 1.0, -3.0])


def test_drl_reference_values_of_section_14():
    s = NoiseSchedule(6, family="drl")
    close(s.logsnr, DRL_LOGSNR)
    close(s.alpha[1:].sqrt(), DRL_A[1:])
    close(s.alpha_bar[:1].sqrt(), DRL_A[:1])
    close(s.sigma[1:], DRL_SIGMA[1:])
    close(s.sigma_bar[:1], DRL_SIGMA[:1])
    assert (s.logsnr_min, s.logsnr_max) == (pytest.approx(-10.1177, rel=1e-5), pytest.approx(9.21024, rel=1e-5))


def test_drl_step_sizes_of_section_14():
    """DRL's step_size² = (σ_cum_t/σ_cum_0)·2e-4·σ_{t+1}² is the image rule with c0 = 1e-4."""
    a_cum = np.cumprod(DRL_A)
    sigma_cum = np.sqrt(1 - a_cum**2)
    expected = [math.sqrt(sigma_cum[t - 1] / sigma_cum[0] * 2e-4 * DRL_SIGMA[t] ** 2) for t in range(1, 7)]
    close(NoiseSchedule(6, family="drl").langevin("image", 1e-4).step_size[1:], expected)


def test_drl_indices_for_other_K():
    """idx = [0, s, …, (K-1)s, 999], s = 1000 // (2(K-1)): computed here with a plain loop."""
    for K in (2, 3, 10):
        stride = 1000 // (2 * (K - 1))
        betas = np.linspace(1e-4, 0.02, 1000)
        abar = [float(np.prod(1 - betas[: i + 1])) for i in [j * stride for j in range(K)] + [999]]
        close(drl_logsnr(K), [math.log(a / (1 - a)) for a in abar])


def independent_constants(lam: np.ndarray, c0: float, rule: str) -> dict[str, np.ndarray]:
    """§1-§4 from a list of logSNRs, in numpy with loops (no shared code)."""
    K = len(lam) - 1
    abar = 1 / (1 + np.exp(-lam))
    sbar = np.sqrt(1 / (1 + np.exp(lam)))
    out = {k: [] for k in ("sigma", "init", "w", "s", "c")}
    sig1 = math.sqrt(1 - abar[1] / abar[0])
    for t in range(1, K + 1):
        beta = 1 - abar[t] / abar[t - 1]
        m = 1.0 if t == K else abar[t] / abar[t - 1]
        kappa = 1 / sbar[0] if rule == "toy" else sbar[t - 1] / sbar[0]
        out["sigma"].append(math.sqrt(beta))
        out["init"].append(math.sqrt(m * beta * (1 - abar[t - 1]) / (1 - abar[t])))
        out["w"].append(sig1 / math.sqrt(beta))
        out["s"].append(math.sqrt(2 * c0 * kappa * beta))
        out["c"].append(0.0 if t == K else c0 * kappa)
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize(("family", "K", "lmin", "lmax"), FAMILIES)
@pytest.mark.parametrize(("rule", "c0"), [("toy", 1e-3), ("image", 2e-4)])
def test_derived_constants_and_step_rules_on_each_family(family, K, lmin, lmax, rule, c0):
    s = NoiseSchedule(K, lmin, lmax, family)
    ref = independent_constants(s.logsnr.numpy(), c0, rule)
    lc = s.langevin(rule, c0)
    close(s.sigma[1:], ref["sigma"])
    close(s.init_noise_std[1:], ref["init"])
    close(s.loss_weight[1:], ref["w"])
    close(lc.step_size[1:], ref["s"])
    close(lc.quadratic_coeff[1:], ref["c"])
    # The chain's quadratic term is the recovery likelihood's: c_t / s_t² = 1/(2σ_t²) below the final level (§3).
    close(lc.quadratic_coeff[1:-1] / lc.step_size[1:-1] ** 2, 1 / (2 * s.sigma[1:-1] ** 2))
    ratio = (lc.step_size[1:] / s.sigma[1:]) ** 2
    if rule == "toy":  # s_t/σ_t constant: 2·c0/σ̄_0
        close(ratio, np.full(K, 2 * c0 / float(s.sigma_bar[0])))
    else:  # grows with the level: 2·c0·σ̄_{t-1}/σ̄_0
        close(ratio, 2 * c0 * s.sigma_bar[:-1] / s.sigma_bar[0])
        assert torch.all(ratio[1:] > ratio[:-1])
    doubled = s.langevin(rule, c0, step_multiplier=2.0)
    close(doubled.step_size[1:], 2 * lc.step_size[1:])
    close(doubled.quadratic_coeff[1:], lc.quadratic_coeff[1:])
    assert torch.all(s.logsnr[1:] < s.logsnr[:-1]) and s.is_final.tolist() == [False] * K + [True]


def test_family_reaches_the_training_levels():
    config = load_config(None, ["schedule.family=drl"])
    assert build_schedule(config).family == "drl"
    close(build_levels(config).logsnr.double(), DRL_LOGSNR)  # float32 table


@pytest.mark.parametrize(("override", "match"), [
    ("schedule.family=quadratic", "schedule.family"),
    ("schedule.num_levels=1", "schedule.num_levels"),
])
def test_bad_family_settings_name_the_key(override, match):
    overrides = [override] + (["schedule.family=drl"] if "num_levels" in override else [])
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)
