"""Device and thread setup."""

from __future__ import annotations

import os

import torch

from taskdistill.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device '{name}' is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for, but no CUDA device is available; use device=cpu")
    return device


def set_threads(num_threads: int | None) -> None:
    """Set torch's intra-op threads explicitly (default: the CPUs this process may use).

    Measured here: 1.09x faster student training than torch's implicit default (BENCHMARKS.md).
    """
    torch.set_num_threads(num_threads or len(os.sched_getaffinity(0)))
