"""Performance switches (config section ``perf``), resolved for one device (BENCHMARKS.md §Performance).

Every switch leaves results unchanged within the tolerances of tests/cdrl/test_perf_switches.py:

* ``autocast``: matmuls and convolutions in bf16 under ``torch.autocast``. The Langevin state y, the
  recovery term, the energies F (the nets' input layer and head, cdrl/nets/precision.py), the gradients of
  the parameters, the optimizers and the EMAs stay float32; bf16 matmuls accumulate in float32.
* ``channels_last``: NHWC memory format for the image energy net's weights, so its convolutions and
  activations (all of Langevin's passes) run NHWC on tensor cores; data, Langevin state and noise keep their
  logical layout and values. The initializer stays NCHW: dropout draws its mask in memory order.
* ``compile``: ``torch.compile`` of the energy net's y ↦ F(y) (AOTAutograd compiles its backward too), the
  function Langevin evaluates num_steps times per chain.
* ``cuda_graphs``: the compiled energy step captured as CUDA graphs (compile mode "reduce-overhead"); the
  Langevin loop has fixed shapes, so each level's graph is replayed num_steps times.
* ``fused_optimizer``: Adam/AdamW with ``fused=True`` (one kernel per parameter group).

"auto" resolves to the defaults measured in BENCHMARKS.md: all on for CUDA; on the CPU only bf16
autocast, and only where the CPU has native bf16 dot products (AVX512-BF16 or AMX); torch.compile did not
pay on the CPU (compile time of minutes, no faster steps).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, ContextManager

import torch
from torch import nn

from cdrl.config import PerfConfig

EnergyCall = Callable[[nn.Module, torch.Tensor, list], torch.Tensor]
COMPILE_BACKEND = "inductor"  # tests use "aot_eager": the same graph capture and autograd, no code generation
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists AVX512-BF16 or AMX-BF16 (oneDNN then runs bf16 matmuls natively)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def _switch(value: str | bool, auto: bool) -> bool:
    return auto if value == "auto" else bool(value)


@dataclass(frozen=True)
class PerfSettings:
    """The switches of a PerfConfig for one device, "auto" resolved."""

    device_type: str = "cpu"
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    fused_optimizer: bool = False

    @classmethod
    def resolve(cls, perf: PerfConfig, device: torch.device | str) -> "PerfSettings":
        device_type = torch.device(device).type
        cuda = device_type == "cuda"
        # Every GPU the pipeline targets (Ampere and later) has bf16 tensor cores; without CUDA present the
        # plan for "cuda" is still resolvable (tests, dry runs).
        cuda_bf16 = cuda and (not torch.cuda.is_available() or torch.cuda.is_bf16_supported())
        bf16_auto = cuda_bf16 or (device_type == "cpu" and cpu_has_native_bf16())
        autocast = bf16_auto if perf.autocast == "auto" else perf.autocast == "bf16"
        cuda_graphs = cuda and _switch(perf.cuda_graphs, cuda)
        return cls(
            device_type=device_type,
            autocast_dtype=torch.bfloat16 if autocast else None,
            channels_last=_switch(perf.channels_last, cuda),
            compile=_switch(perf.compile, cuda) or cuda_graphs,
            cuda_graphs=cuda_graphs,
            fused_optimizer=_switch(perf.fused_optimizer, cuda),
        )

    def autocast(self) -> ContextManager:
        """The mixed-precision region for forward passes (Langevin included); backward runs outside it."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def summary(self) -> dict[str, object]:
        return {
            "autocast": str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else "fp32",
            "channels_last": self.channels_last,
            "compile": self.compile,
            "cuda_graphs": self.cuda_graphs,
            "fused_optimizer": self.fused_optimizer,
        }


def apply_threads(perf: PerfConfig) -> None:
    """torch intra-op threads for this process (perf.threads; 0 keeps torch's default of one per core)."""
    if perf.threads > 0:
        torch.set_num_threads(perf.threads)


def to_memory_format(module: nn.Module, settings: PerfSettings) -> nn.Module:
    """The module in channels_last when the switch is on (4-D conv weights only are affected)."""
    return module.to(memory_format=torch.channels_last) if settings.channels_last else module


def plain_energy(net: nn.Module, y: torch.Tensor, condition: list) -> torch.Tensor:
    """F(y) of an energy net whose x-independent ``condition`` was computed once per chain."""
    return net.energy(y, condition)


@lru_cache(maxsize=4)
def _compiled_energy(mode: str | None, backend: str) -> EnergyCall:
    return torch.compile(plain_energy, mode=mode, backend=backend, dynamic=False)


def energy_call(settings: PerfSettings) -> EnergyCall:
    """``plain_energy``, or its torch.compile'd version (CUDA graphs with mode "reduce-overhead")."""
    if not settings.compile:
        return plain_energy
    return _compiled_energy("reduce-overhead" if settings.cuda_graphs else None, COMPILE_BACKEND)
