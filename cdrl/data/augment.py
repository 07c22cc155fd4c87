"""Data augmentation applied to training batches (official CIFAR-10 / ImageNet32 transforms, §11)."""
from __future__ import annotations

import torch


def random_horizontal_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image of an (N, C, H, W) batch left-right with probability 1/2 (RandomHorizontalFlip).

    The coin flips come from ``generator`` (seeded per step by the loop), so a resumed run flips the same
    images as the original one.
    """
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
