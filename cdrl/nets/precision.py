"""Layers kept in float32 under mixed precision (BENCHMARKS.md §Performance, "bf16 autocast").

Autocast runs every Linear/Conv in bf16. Where bf16's 8-bit mantissa would change results that matter
(the toy's raw ±8 input coordinates, the energy head whose output is F itself), a layer is run in float32.
"""
from __future__ import annotations

import torch
from torch import nn


def full_precision(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in float32 with autocast off (a no-op difference when autocast is not active)."""
    if not torch.is_autocast_enabled(x.device.type):
        return layer(x)
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())
