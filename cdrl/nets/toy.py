"""The 2-D toy networks: the MLP energy net (§5.2) and the residual MLP initializer (§5.3)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cdrl.nets.embedding import TimeLabelEmbedding, distinct_conditions, maybe_spectral_norm
from cdrl.nets.precision import full_precision


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class _EnergyBlock(nn.Module):
    """r = SN(in→out)(lrelu h) + time; r = SN(out→out)(lrelu r) ⊙ gain; out = r + shortcut(h)."""

    def __init__(self, in_dim: int, out_dim: int, temb_dim: int, sn: bool):
        super().__init__()
        self.fc1 = maybe_spectral_norm(nn.Linear(in_dim, out_dim), sn)
        self.time_proj = maybe_spectral_norm(nn.Linear(temb_dim, out_dim), sn)
        self.fc2 = maybe_spectral_norm(nn.Linear(out_dim, out_dim), sn)
        self.gain = nn.Parameter(torch.ones(out_dim))
        self.shortcut = maybe_spectral_norm(nn.Linear(in_dim, out_dim), sn) if in_dim != out_dim else nn.Identity()

    def time_features(self, temb: torch.Tensor) -> torch.Tensor:
        return _lrelu(self.time_proj(_lrelu(temb)))

    def forward(self, h: torch.Tensor, time_feature: torch.Tensor) -> torch.Tensor:
        r = self.fc1(_lrelu(h)) + time_feature
        r = self.fc2(_lrelu(r)) * self.gain.to(r.dtype)  # keeps a bf16 stream bf16 under autocast
        return r + self.shortcut(h)


class ToyEnergyNet(nn.Module):
    """F_θ(y, λ) for 2-D data (§5.2). ``condition`` holds the x-independent work, done once per chain.

    Under bf16 autocast the input layer (raw ±8 coordinates) and the head (the energy) stay in float32.
    """

    def __init__(
        self,
        data_dim: int = 2,
        base_width: int = 128,
        width_mult: tuple[int, ...] = (1, 2, 2, 2),
        temb_dim: int = 128,
        temb_hidden: int = 512,
        spectral_norm: bool = True,
        num_classes: int = 0,
    ):
        super().__init__()
        self.time_embedding = TimeLabelEmbedding(temb_dim, temb_hidden, nn.LeakyReLU(0.2), spectral_norm, num_classes)
        self.input = maybe_spectral_norm(nn.Linear(data_dim, base_width), spectral_norm)
        widths = [base_width] + [base_width * m for m in width_mult]
        self.blocks = nn.ModuleList(
            _EnergyBlock(widths[i], widths[i + 1], temb_hidden, spectral_norm) for i in range(len(width_mult))
        )
        self.head = nn.Linear(widths[-1], 1, bias=False)

    def condition(self, logsnr: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        distinct_logsnr, distinct_labels, rows = distinct_conditions(logsnr, labels)
        temb = self.time_embedding(distinct_logsnr, distinct_labels)
        return [block.time_features(temb)[rows] for block in self.blocks]

    def energy(self, y: torch.Tensor, condition: list[torch.Tensor]) -> torch.Tensor:
        h = full_precision(self.input, y)
        for block, time_feature in zip(self.blocks, condition):
            h = block(h, time_feature)
        return full_precision(self.head, F.relu(h)).squeeze(1)

    def forward(self, y: torch.Tensor, logsnr: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.energy(y, self.condition(logsnr, labels))


class ToyInitializer(nn.Module):
    """g_φ(x_t, λ_t) = x_t + h_φ(x_t, λ_t), zero-initialised output so g starts as the identity (§4, §5.3)."""

    def __init__(
        self,
        data_dim: int = 2,
        hidden: int = 64,
        temb_dim: int = 128,
        num_blocks: int = 1,
        groups: int = 32,
        num_classes: int = 0,
    ):
        super().__init__()
        self.time_embedding = TimeLabelEmbedding(temb_dim, temb_dim, nn.SiLU(), num_classes=num_classes)
        self.input = nn.Linear(data_dim, hidden)
        self.blocks = nn.ModuleList(_InitializerBlock(hidden, temb_dim, groups) for _ in range(num_blocks))
        self.output = nn.Linear(hidden, data_dim, bias=False)
        nn.init.zeros_(self.output.weight)

    def forward(self, x_t: torch.Tensor, logsnr: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        temb = self.time_embedding(logsnr, labels)
        h = full_precision(self.input, x_t)  # raw ±8 coordinates: bf16 would round them to 1/16
        for block in self.blocks:
            h = block(h, temb)
        return x_t + full_precision(self.output, F.silu(h))


class _InitializerBlock(nn.Module):
    """FiLM residual block: GN → SiLU → Linear → GN·(1+scale)+shift → SiLU → zero-init Linear (§5.3)."""

    def __init__(self, hidden: int, temb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.film = nn.Linear(temb_dim, 2 * hidden)
        self.norm2 = nn.GroupNorm(groups, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.fc2.weight)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        a = self.fc1(F.silu(self.norm1(h)))
        scale, shift = self.film(F.silu(temb)).chunk(2, dim=1)
        a = self.norm2(a) * (1 + scale) + shift
        a = self.fc2(F.silu(a))
        return h + a
