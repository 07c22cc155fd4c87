"""The image initializer g_φ(x_t, λ_t[, c]): a DDPM-style UNet with a residual output (docs/algorithm.md §4, §5.5)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cdrl.nets.embedding import TimeLabelEmbedding
from cdrl.nets.precision import full_precision


def _zero_weight(conv: nn.Conv2d) -> nn.Conv2d:
    """Zero the weight and keep PyTorch's default bias (§5.5)."""
    nn.init.zeros_(conv.weight)
    return conv


class _ResBlock(nn.Module):
    """SiLU(GN) → [resample] → Conv3x3 → GN·(1+scale)+shift → SiLU → Dropout → zero-init Conv3x3, + skip (§5.5).

    ``resample`` is None, "down" (AvgPool2d(2)) or "up" (nearest ×2); it acts on the main path and on the skip.
    The skip is a 1x1 conv when the channel count changes, otherwise the identity.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_dim: int,
        dropout: float,
        groups: int,
        resample: str | None = None,
    ):
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', got {resample!r}")
        self.resample = resample
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(temb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero_weight(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def _resampled(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        a = self.conv1(self._resampled(F.silu(self.norm1(h))))
        scale, shift = self.film(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
        a = self.norm2(a) * (1 + scale) + shift
        a = self.conv2(self.dropout(F.silu(a)))
        return a + self.skip(self._resampled(h))


class _SelfAttention(nn.Module):
    """GN → 1x1 qkv → single-head softmax attention over H·W with scale C^-½ → zero-init 1x1 conv, + input (§5.5)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = _zero_weight(nn.Conv2d(channels, channels, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = h.shape
        q, k, v = self.qkv(self.norm(h)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # each (B, HW, C)
        attended = F.scaled_dot_product_attention(q, k, v)
        return h + self.out(attended.transpose(1, 2).reshape(batch, channels, height, width))


class _ResAttnBlock(nn.Module):
    """A ResBlock, followed by self-attention when the feature map is at an attention resolution."""

    def __init__(self, in_channels: int, out_channels: int, temb_dim: int, dropout: float, groups: int, attend: bool):
        super().__init__()
        self.res = _ResBlock(in_channels, out_channels, temb_dim, dropout, groups)
        self.attention = _SelfAttention(out_channels, groups) if attend else nn.Identity()

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.attention(self.res(h, temb))


class _DownLevel(nn.Module):
    """R blocks, then a down-ResBlock unless this is the last level; every output is pushed onto the skip stack."""

    def __init__(self, blocks: list[_ResAttnBlock], downsample: _ResBlock | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, h: torch.Tensor, temb: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, temb)
            skips.append(h)
        if self.downsample is not None:
            h = self.downsample(h, temb)
            skips.append(h)
        return h


class _UpLevel(nn.Module):
    """R+1 blocks, each on concat(h, popped skip), then an up-ResBlock unless this is the last level."""

    def __init__(self, blocks: list[_ResAttnBlock], upsample: _ResBlock | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.upsample = upsample

    def forward(self, h: torch.Tensor, temb: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for block in self.blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
        if self.upsample is not None:
            h = self.upsample(h, temb)
        return h


class UNetInitializer(nn.Module):
    """g_φ(x_t, λ_t[, c]) = x_t + h_φ(x_t, λ_t[, c]) for images (§4, §5.5).

    The last conv's weight is zero-initialised, so at init g is the identity plus the output conv's default bias.
    ``image_size`` fixes the feature-map size of each level, which decides where attention goes.
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 1, 1),
        num_res_blocks: int = 3,
        attention_resolutions: tuple[int, ...] = (16, 8),
        dropout: float = 0.1,
        temb_dim: int = 64,
        temb_hidden: int = 256,
        groups: int = 32,
        num_classes: int = 0,
        image_size: int = 32,
    ):
        super().__init__()
        self.time_embedding = TimeLabelEmbedding(temb_dim, temb_hidden, nn.SiLU(), num_classes=num_classes)
        self.input = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        def res_attn(in_ch: int, out_ch: int, size: int) -> _ResAttnBlock:
            return _ResAttnBlock(in_ch, out_ch, temb_hidden, dropout, groups, size in attention_resolutions)

        last = len(channel_mult) - 1
        channels, size = base_channels, image_size
        skip_channels = [channels]
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(res_attn(channels, base_channels * mult, size))
                channels = base_channels * mult
                skip_channels.append(channels)
            downsample = None
            if level < last:
                downsample = _ResBlock(channels, channels, temb_hidden, dropout, groups, resample="down")
                skip_channels.append(channels)
                size //= 2
            self.down.append(_DownLevel(blocks, downsample))

        self.middle = nn.ModuleList(
            [
                _ResAttnBlock(channels, channels, temb_hidden, dropout, groups, attend=True),
                _ResBlock(channels, channels, temb_hidden, dropout, groups),
            ]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(res_attn(channels + skip_channels.pop(), base_channels * mult, size))
                channels = base_channels * mult
            upsample = None
            if level > 0:
                upsample = _ResBlock(channels, channels, temb_hidden, dropout, groups, resample="up")
                size *= 2
            self.up.append(_UpLevel(blocks, upsample))

        self.output_norm = nn.GroupNorm(groups, channels)
        self.output = _zero_weight(nn.Conv2d(channels, in_channels, 3, padding=1))

    def forward(self, x_t: torch.Tensor, logsnr: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        temb = self.time_embedding(logsnr, labels)
        h = full_precision(self.input, x_t)
        skips = [h]
        for level in self.down:
            h = level(h, temb, skips)
        for block in self.middle:
            h = block(h, temb)
        for level in self.up:
            h = level(h, temb, skips)
        return x_t + full_precision(self.output, F.silu(self.output_norm(h)))
