"""The image energy network F_θ(y, λ[, c]) used for CIFAR-10 and ImageNet 32×32 (docs/algorithm.md §5.4)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cdrl.nets.embedding import TimeLabelEmbedding, distinct_conditions, maybe_spectral_norm
from cdrl.nets.precision import full_precision


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def _conv3x3(in_channels: int, out_channels: int, sn: bool) -> nn.Module:
    return maybe_spectral_norm(nn.Conv2d(in_channels, out_channels, 3, padding=1), sn)


class _EnergyResBlock(nn.Module):
    """r = SN-Conv(lrelu h) + time; r = SN-Conv(lrelu r) ⊙ gain; out = r + shortcut(h) (§5.4).

    The shortcut is the identity, or an SN-Conv3x3 when the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int, temb_dim: int, sn: bool):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, sn)
        self.time_proj = maybe_spectral_norm(nn.Linear(temb_dim, out_channels), sn)
        self.conv2 = _conv3x3(out_channels, out_channels, sn)
        self.gain = nn.Parameter(torch.ones(out_channels))
        self.shortcut = _conv3x3(in_channels, out_channels, sn) if in_channels != out_channels else nn.Identity()

    def time_features(self, temb: torch.Tensor) -> torch.Tensor:
        """lrelu(SN-Linear(lrelu temb)) as (B, out, 1, 1), broadcast over H, W."""
        return _lrelu(self.time_proj(_lrelu(temb)))[:, :, None, None]

    def forward(self, h: torch.Tensor, time_feature: torch.Tensor) -> torch.Tensor:
        r = self.conv1(_lrelu(h)) + time_feature
        r = self.conv2(_lrelu(r)) * self.gain.to(r.dtype)[None, :, None, None]  # bf16 stays bf16 under autocast
        return r + self.shortcut(h)


class ImageEnergyNet(nn.Module):
    """F_θ(y, λ[, c]) for images (§5.4): spectrally normalised ResNet, sum-pooled, time-dependent linear head.

    ``condition`` holds the x-independent work (time/label embedding, per-block time features and the head
    vector), done once per Langevin chain; ``energy`` is the part that depends on y.
    AvgPool2d(2) follows every resolution except the last; the sum-pooled head accepts any input size.
    Under bf16 autocast the sum-pool and the head (the energy) are float32.
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 2, 2, 2),
        blocks_per_resolution: int = 8,
        temb_dim: int = 128,
        temb_hidden: int = 512,
        spectral_norm: bool = True,
        num_classes: int = 0,
    ):
        super().__init__()
        self.time_embedding = TimeLabelEmbedding(temb_dim, temb_hidden, nn.LeakyReLU(0.2), spectral_norm, num_classes)
        self.input = _conv3x3(in_channels, base_channels, spectral_norm)
        self.resolutions = nn.ModuleList()
        channels = base_channels
        for mult in channel_mult:
            blocks = nn.ModuleList()
            for _ in range(blocks_per_resolution):
                blocks.append(_EnergyResBlock(channels, base_channels * mult, temb_hidden, spectral_norm))
                channels = base_channels * mult
            self.resolutions.append(blocks)
        self.head_time_proj = nn.Linear(temb_hidden, channels, bias=False)

    def condition(self, logsnr: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per-block time features (B, C, 1, 1) in block order, then the head vector (B, C_last)."""
        distinct_logsnr, distinct_labels, rows = distinct_conditions(logsnr, labels)
        temb = self.time_embedding(distinct_logsnr, distinct_labels)
        block_features = [block.time_features(temb)[rows] for blocks in self.resolutions for block in blocks]
        return [*block_features, full_precision(self.head_time_proj, _lrelu(temb))[rows]]

    def energy(self, y: torch.Tensor, condition: list[torch.Tensor]) -> torch.Tensor:
        *block_features, head_vector = condition
        time_features = iter(block_features)
        h = full_precision(self.input, y)
        for index, blocks in enumerate(self.resolutions):
            for block in blocks:
                h = block(h, next(time_features))
            if index < len(self.resolutions) - 1:
                h = F.avg_pool2d(h, 2)
        pooled = F.relu(h).float().sum(dim=(2, 3))
        return (pooled * head_vector.float()).sum(dim=1)

    def forward(self, y: torch.Tensor, logsnr: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.energy(y, self.condition(logsnr, labels))
