"""Numeric precision of a stage: autocast, TF32, a GradScaler for fp16, and the device's speed switches.

`precision` is one of `auto | fp32 | bf16 | fp16`. `auto` is bf16 on a CUDA GPU that supports it and fp32
everywhere else (the CPU included), so a CPU run is unchanged. fp32 turns autocast fully off (no context
is entered at all), which keeps CPU figures bit-identical to a loop without this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal, get_args

import torch

from taskdistill.errors import ConfigError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Resolved = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def bf16_supported(device: torch.device | str) -> bool:
    """True on a CUDA device with native bf16 (Ampere and later)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def resolve_precision(precision: str, device: torch.device | str) -> Resolved:
    """`auto` -> bf16 on a CUDA GPU that supports it, else fp32; other names are checked and returned."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision  # type: ignore[return-value]


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of `precision` on `device`; None for fp32 (autocast off)."""
    return _DTYPES.get(resolve_precision(precision, device))


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """`torch.autocast` at `precision` on `device`'s type; nothing at all for fp32."""
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (bf16 and fp32 need none)."""
    if resolve_precision(precision, device) != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def configure_device(device: torch.device | str) -> None:
    """Speed switches that do not change what is computed beyond TF32 rounding: on CUDA only, TF32 matmuls and
    convolutions and cudnn's autotuner. The CPU is left exactly as it is (its figures must not move)."""
    if torch.device(device).type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


def use_channels_last(channels_last: bool | None, device: torch.device | str) -> bool:
    """`None` means: on CUDA only."""
    return torch.device(device).type == "cuda" if channels_last is None else bool(channels_last)
