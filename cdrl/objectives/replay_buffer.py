"""A replay buffer of persistent SGLD chains, one per worker, saved in checkpoints (Du & Mordatch 2019 §3.1)."""
from __future__ import annotations

import torch
import torch.distributed as dist


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ReplayBuffer:
    """``size`` past negatives. ``draw`` returns chain starts (some restarted from noise), ``store`` puts the
    chains' ends back in the same slots. Uses the global torch RNG, which the loop seeds per (seed, rank, step).
    """

    def __init__(self, size: int, reinit_prob: float, init_range: float):
        self.size, self.reinit_prob, self.init_range = size, reinit_prob, init_range
        self.chains: torch.Tensor | None = None  # created at the first draw, on the data's device

    def noise(self, n: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return (torch.rand(n, *shape, device=device) * 2 - 1) * self.init_range

    def draw(self, n: int, shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(starts, slots): ``n`` buffer entries, each replaced by fresh noise with ``reinit_prob``."""
        if self.chains is None:
            self.chains = self.noise(self.size, shape, device)
        self.chains = self.chains.to(device)
        slots = torch.randint(0, self.size, (n,), device=device)
        starts = self.chains[slots]
        restart = torch.rand(n, device=device) < self.reinit_prob
        starts = torch.where(restart.view(-1, *([1] * len(shape))), self.noise(n, shape, device), starts)
        return starts, slots

    def store(self, slots: torch.Tensor, chains: torch.Tensor) -> None:
        self.chains[slots] = chains.detach()

    def state_dict(self) -> dict:
        """Every worker's buffer, gathered from all ranks (call on every rank, as checkpoints are taken)."""
        if self.chains is None:
            return {}
        rank, world = _rank_and_world()
        if world == 1:
            return {"chains": [self.chains.cpu()]}
        gathered = [torch.empty_like(self.chains) for _ in range(world)]
        dist.all_gather(gathered, self.chains.contiguous())
        return {"chains": [c.cpu() for c in gathered]}

    def load_state_dict(self, state: dict) -> None:
        """This rank's buffer (rank mod the saved count, if the number of workers changed)."""
        if not state:
            return
        rank, _ = _rank_and_world()
        saved = state["chains"]
        self.chains = saved[rank % len(saved)].clone()
