"""The one helper for device choice and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from mnistcli.errors import UsageError


def choose_device(name: str = "auto") -> torch.device:
    """Resolve 'auto', 'cpu', 'cuda' or 'mps' to an available device.

    'auto' prefers CUDA, then MPS, then the CPU. Raises `UsageError` if the named one is absent.
    """
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise UsageError("--device cuda: no CUDA device is available here")
    if name == "mps" and not mps:
        raise UsageError("--device mps: no Apple MPS device is available here")
    if name not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unknown device {name!r} (choose from auto, cpu, cuda, mps)")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware: a CUDA GPU that supports it, a CPU with AVX-512 BF16 or AMX
    (oneDNN's bf16 kernels). Elsewhere bf16 autocast is emulated, and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return any(
            getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        )
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`precision` as a run trains: 'auto' is bf16 where the device computes it natively (`native_bf16`), else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a torch CPU generator for the training run's own draws."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
