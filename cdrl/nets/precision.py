"""Layers kept in float32 under mixed precision (BENCHMARKS.md §Performance, "bf16 autocast").

Autocast runs every Linear/Conv in bf16. Where bf16's 8-bit mantissa would change results that matter, a
layer is run in float32: every net's input layer (the toy's raw ±8 coordinates would be rounded to 1/16, far
above the cleanest level's noise σ ≈ 0.007; pixels to a grey level), the energy head whose output is F
itself, and the initializers' output layer (the proposal's correction). The energies of a contrastive loss
run wholly in float32 (``float32_region``): only Langevin's gradient evaluations, the bulk of the FLOPs, and
the initializer's hidden layers use bf16 (BENCHMARKS.md, "bf16 and the fast toy's quality").
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
from torch import nn


def full_precision(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in float32 with autocast off (a no-op difference when autocast is not active)."""
    if not torch.is_autocast_enabled(x.device.type):
        return layer(x)
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


def float32_region(x: torch.Tensor) -> ContextManager:
    """Autocast off for the block (a no-op when it is not active): for the energies that enter a contrastive
    loss F(y⁻) − F(y⁺), a small difference of two large numbers that bf16 hidden layers would drown."""
    if not torch.is_autocast_enabled(x.device.type):
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False)
