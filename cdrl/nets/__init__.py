"""Networks: energy nets F_θ(y, λ[, c]) and initializers g_φ(x_t, λ[, c]) (docs/algorithm.md §5).

Every energy net has ``condition(logsnr, labels)`` (x-independent work, done once per Langevin chain),
``energy(y, condition)`` → (B,) and ``forward(y, logsnr, labels)``. Every initializer has
``forward(x_t, logsnr, labels)`` → same shape as x_t. Labels are 0 for "null", 1..num_classes for classes.
"""
from __future__ import annotations

from torch import nn

from cdrl.config import ModelConfig
from cdrl.nets.image_energy import ImageEnergyNet
from cdrl.nets.toy import ToyEnergyNet, ToyInitializer
from cdrl.nets.unet import UNetInitializer


def is_vector_data(data_shape: tuple[int, ...]) -> bool:
    """Flat vectors (the 2-D toys) use the MLP nets; (C, H, W) images use the conv nets."""
    return len(data_shape) == 1


def build_energy_net(model: ModelConfig, data_shape: tuple[int, ...]) -> nn.Module:
    cfg = model.energy_net
    if is_vector_data(data_shape):
        return ToyEnergyNet(
            data_dim=data_shape[0],
            base_width=cfg.base_channels,
            width_mult=tuple(cfg.channel_mult),
            temb_dim=cfg.temb_dim,
            temb_hidden=cfg.temb_hidden,
            spectral_norm=cfg.spectral_norm,
            num_classes=model.num_classes,
        )
    return ImageEnergyNet(
        in_channels=data_shape[0],
        base_channels=cfg.base_channels,
        channel_mult=tuple(cfg.channel_mult),
        blocks_per_resolution=cfg.blocks_per_resolution,
        temb_dim=cfg.temb_dim,
        temb_hidden=cfg.temb_hidden,
        spectral_norm=cfg.spectral_norm,
        num_classes=model.num_classes,
    )


def build_initializer(model: ModelConfig, data_shape: tuple[int, ...]) -> nn.Module:
    cfg = model.initializer
    if is_vector_data(data_shape):
        return ToyInitializer(
            data_dim=data_shape[0],
            hidden=cfg.base_channels,
            temb_dim=cfg.temb_dim,
            num_blocks=cfg.num_res_blocks,
            groups=cfg.groups,
            num_classes=model.num_classes,
        )
    return UNetInitializer(
        in_channels=data_shape[0],
        base_channels=cfg.base_channels,
        channel_mult=tuple(cfg.channel_mult),
        num_res_blocks=cfg.num_res_blocks,
        attention_resolutions=tuple(cfg.attention_resolutions),
        dropout=cfg.dropout,
        temb_dim=cfg.temb_dim,
        temb_hidden=cfg.temb_hidden,
        groups=cfg.groups,
        num_classes=model.num_classes,
        image_size=data_shape[-1],
    )


def count_parameters(net: nn.Module) -> int:
    """Trainable parameters (spectral norm's u/v are buffers and do not count), as in §5."""
    return sum(p.numel() for p in net.parameters())
