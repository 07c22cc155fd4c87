"""Metrics for 2-D toy samples (docs/algorithm.md §11, §15).

§15 found kernel MMD at its noise floor for any reasonably trained toy model, so the discriminating
metrics for ``8squares`` are the in-support fraction and the per-square balance; MMD is kept as a
generic distance that works for every toy.
"""
from __future__ import annotations

import numpy as np
import torch

from cdrl.data.toy2d import SQUARE_CORNERS, SQUARE_SCALE

_NUM_SQUARES = len(SQUARE_CORNERS)
# Kernel entries per block: small enough to stay in cache (faster than one big block) and far below the
# ~25M-entry memory cap, so 10k-vs-10k points take well under a second on 2 cores.
_KERNEL_BLOCK_ENTRIES = 2_000_000


def _square_membership(points: np.ndarray) -> np.ndarray:
    """(N, 8) boolean: point n lies in the closed square j = [4c_x, 4c_x+4] × [4c_y, 4c_y+4] (§11)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lower = SQUARE_CORNERS * SQUARE_SCALE
    upper = lower + SQUARE_SCALE
    return np.all((points[:, None, :] >= lower) & (points[:, None, :] <= upper), axis=2)


def in_support_fraction(points: np.ndarray) -> float:
    """Fraction of points inside any of the 8 closed 4×4 squares of the paper's toy (§11, §15)."""
    membership = _square_membership(points)
    return float(membership.any(axis=1).mean()) if len(membership) else 0.0


def square_shares(points: np.ndarray) -> np.ndarray:
    """Share of the in-support points that falls in each of the 8 squares (sums to 1; zeros if none).

    A point on an edge shared by two squares counts for the first of them in SQUARE_CORNERS order.
    """
    membership = _square_membership(points)
    inside = membership.any(axis=1)
    if not inside.any():
        return np.zeros(_NUM_SQUARES)
    counts = np.bincount(membership[inside].argmax(axis=1), minlength=_NUM_SQUARES)
    return counts / counts.sum()


def square_balance(points: np.ndarray) -> float:
    """Mode balance of ``8squares`` samples (§15): max_j |share_j − 1/8| over the 8 squares.

    share_j is the fraction of the *in-support* points that lie in square j (see ``square_shares``),
    so the metric ignores off-support mass (``in_support_fraction`` measures that). 0 means perfectly
    balanced; 7/8 means every in-support point sits in one square; 1.0 is returned when no point is in
    support at all.
    """
    shares = square_shares(points)
    if shares.sum() == 0:
        return 1.0
    return float(np.abs(shares - 1.0 / _NUM_SQUARES).max())


def _kernel_sum(a: torch.Tensor, b: torch.Tensor, bandwidth: float, max_entries: int) -> float:
    """Σ_ij exp(−|a_i − b_j|²/(2h²)), built in row blocks of at most ``max_entries`` kernel entries.

    Each row is summed in the blocks' dtype, the row sums in float64.
    """
    rows = max(1, max_entries // max(1, len(b)))
    b_sq = (b * b).sum(dim=1)
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, len(a), rows):
        block = a[start : start + rows]
        sq_dist = torch.addmm((block * block).sum(dim=1)[:, None] + b_sq[None, :], block, b.T, alpha=-2.0)
        kernel = sq_dist.clamp_(min=0.0).mul_(-0.5 / bandwidth**2).exp_()
        total += kernel.sum(dim=1).double().sum()
    return float(total)


def rbf_mmd2(
    x: np.ndarray,
    y: np.ndarray,
    bandwidth: float = 1.0,
    max_points: int | None = None,
    max_kernel_entries: int = _KERNEL_BLOCK_ENTRIES,
) -> float:
    """Unbiased MMD² between samples x (m, d) and y (n, d) with k(a, b) = exp(−|a−b|²/(2h²)) (§15).

    MMD²_u = Σ_{i≠j} k(x_i,x_j)/(m(m−1)) + Σ_{i≠j} k(y_i,y_j)/(n(n−1)) − 2 Σ_ij k(x_i,y_j)/(mn).
    It can be slightly negative when the two distributions match. ``max_points`` keeps only the first
    that many points of each sample. Kernel blocks (float32, on centred data) never exceed
    ``max_kernel_entries`` entries; their sums accumulate in float64.
    """
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    x_t = torch.as_tensor(np.asarray(x)[:max_points], dtype=torch.float64)
    y_t = torch.as_tensor(np.asarray(y)[:max_points], dtype=torch.float64)
    # MMD is translation invariant: centring keeps the float32 kernel blocks accurate.
    center = torch.cat([x_t, y_t]).mean(dim=0)
    x_t, y_t = (x_t - center).float(), (y_t - center).float()
    m, n = len(x_t), len(y_t)
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD needs at least 2 points per sample, got {m} and {n}")
    # The diagonal terms k(x_i, x_i) = 1 are removed exactly from the within-sample sums.
    k_xx = (_kernel_sum(x_t, x_t, bandwidth, max_kernel_entries) - m) / (m * (m - 1))
    k_yy = (_kernel_sum(y_t, y_t, bandwidth, max_kernel_entries) - n) / (n * (n - 1))
    k_xy = _kernel_sum(x_t, y_t, bandwidth, max_kernel_entries) / (m * n)
    return k_xx + k_yy - 2.0 * k_xy


def mmd_key(bandwidth: float) -> str:
    """Report key of the MMD at one bandwidth: 1.0 → ``mmd_bw1``, 0.5 → ``mmd_bw0.5``."""
    return f"mmd_bw{bandwidth:g}"


def toy_report(
    samples: np.ndarray,
    reference: np.ndarray,
    bandwidths: tuple[float, ...] = (1.0,),
    distribution: str = "8squares",
    max_points: int | None = 10_000,
) -> dict[str, float]:
    """Toy metrics of ``samples`` against ``reference`` data (§15).

    Keys: ``mmd_bw{h}`` per bandwidth (see ``mmd_key``); for ``8squares`` also ``in_support`` and
    ``balance``, which have no meaning for the other toys. MMD uses at most ``max_points`` per sample.
    """
    report: dict[str, float] = {}
    if distribution == "8squares":
        report["in_support"] = in_support_fraction(samples)
        report["balance"] = square_balance(samples)
    for bandwidth in bandwidths:
        report[mmd_key(bandwidth)] = rbf_mmd2(samples, reference, bandwidth, max_points)
    return report
