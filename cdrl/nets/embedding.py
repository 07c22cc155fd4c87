"""Time and label embeddings shared by every network (docs/algorithm.md §5.1, §8)."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from cdrl.schedule import logsnr_to_time_input


def sinusoidal_embedding(logsnr: torch.Tensor, dim: int) -> torch.Tensor:
    """[sin(e·ω_j), cos(e·ω_j)] with e = 1000·u_emb(λ) and ω_j = exp(-j·ln(10000)/(dim/2 - 1)) (§5.1)."""
    if dim % 2 or dim < 4:
        raise ValueError(f"time embedding dim must be even and >= 4, got {dim}")
    half = dim // 2
    e = 1000.0 * logsnr_to_time_input(logsnr.float())
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=logsnr.device, dtype=torch.float32) / (half - 1))
    angles = e[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    """Spectral normalisation with one power iteration per training-mode forward (§5.2, §6)."""
    return spectral_norm(module) if enabled else module


class LabelEmbedding(nn.Module):
    """Linear map of one_hot(label) for labels in {0..num_classes}; 0 is the null label (§8).

    Stored as a Linear on the one-hot so parameter counts and spectral norm match the paper's nets.
    """

    def __init__(self, num_classes: int, dim: int, use_spectral_norm: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.proj = maybe_spectral_norm(nn.Linear(num_classes + 1, dim), use_spectral_norm)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        one_hot = nn.functional.one_hot(labels.long(), self.num_classes + 1).to(self.proj.weight.dtype)
        return self.proj(one_hot)


def null_labels_if_missing(labels: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
    """A conditional net called without labels uses the null label 0 (unconditional mode, §8)."""
    if labels is None:
        return torch.zeros(batch, dtype=torch.long, device=device)
    return labels


def distinct_conditions(logsnr: torch.Tensor, labels: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(distinct λ, their labels, index of each example's row): a batch mixes only K levels (× classes).

    x-independent work (time/label embedding and per-block projections) then runs on the few distinct
    rows and is gathered back per example: the same values and gradients for ~1/300 of the multiply-adds
    at the toy's batch of 2500.
    """
    if labels is None:
        distinct, inverse = torch.unique(logsnr, return_inverse=True)
        return distinct, None, inverse
    pairs = torch.stack([logsnr.double(), labels.double()], dim=1)
    distinct, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    return distinct[:, 0].to(logsnr.dtype), distinct[:, 1].to(labels.dtype), inverse


class TimeLabelEmbedding(nn.Module):
    """temb = Linear → act → Linear of sinusoid(λ) (§5.1), plus Linear(one_hot(label)) when conditional (§8).

    The energy nets use spectral norm and leaky ReLU (§5.2, §5.4); the initializers plain layers and SiLU
    (§5.3, §5.5).
    """

    def __init__(self, sinusoid_dim: int, out_dim: int, activation: nn.Module, spectral_norm: bool = False,
                 num_classes: int = 0):
        super().__init__()
        self.sinusoid_dim = sinusoid_dim
        self.mlp = nn.Sequential(
            maybe_spectral_norm(nn.Linear(sinusoid_dim, out_dim), spectral_norm),
            activation,
            maybe_spectral_norm(nn.Linear(out_dim, out_dim), spectral_norm),
        )
        self.label_embedding = LabelEmbedding(num_classes, out_dim, spectral_norm) if num_classes else None

    def forward(self, logsnr: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        temb = self.mlp(sinusoidal_embedding(logsnr, self.sinusoid_dim))
        if self.label_embedding is not None:
            temb = temb + self.label_embedding(null_labels_if_missing(labels, len(logsnr), logsnr.device))
        return temb
