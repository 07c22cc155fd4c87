"""The learned sampler's generator g(z): an MLP from a Gaussian latent to data space (any item shape)."""
from __future__ import annotations

import math

import torch
from torch import nn


class Generator(nn.Module):
    """z ∈ R^latent_dim ↦ g(z) with the data's item shape; three hidden SiLU layers."""

    def __init__(self, data_shape: tuple[int, ...], latent_dim: int = 16, hidden: int = 128):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.latent_dim = latent_dim
        self.body = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, math.prod(self.data_shape)),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z).view(len(z), *self.data_shape)
