"""Batched inference, the one loop behind evaluation, the teacher-output caches, pooled features, embedding
and latency: host batches built ahead in a background thread (pinned for CUDA), the forward pass under the
stage's precision (`engine.precision`), outputs collected without a per-batch sync.

`batch_size="auto"` asks for the largest batch that fits (CUDA: found once per model, input size, device and
precision by doubling until out of memory, and remembered for the process); on the CPU it is the CPU rule
of `inference_batch_size` at the default evaluation batch, as before.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from taskdistill.data.image_rows import Images
from taskdistill.data.views import Views
from taskdistill.engine.batches import EpochSampler, inference_batch_size
from taskdistill.engine.precision import autocast, resolve_precision
from taskdistill.engine.prefetch import ahead
from taskdistill.progress import ProgressLine

BatchSize = int | Literal["auto"]
Forward = Callable[[torch.Tensor, Views | None], torch.Tensor]  # uint8 [B, C, H, W] on the device, views -> [B, ...]
AUTO_START = 128  # where the search starts, and the CPU's batch for "auto" (before the CPU pixel rule)
AUTO_LIMIT = 8192
_found: dict[tuple[int, int, str, str], int] = {}


def infer_batch(forward: Forward, images: torch.Tensor, device: torch.device | str, precision: str = "fp32",
                views: Views | None = None) -> torch.Tensor:
    """`forward` on one host batch of uint8 `images` `[B, C, H, W]`, moved without blocking, under autocast
    at `precision` (fp32: none); the result stays on the device."""
    device = torch.device(device)
    x = images.to(device, non_blocking=True)
    with autocast(precision, device):
        return forward(x, views)


def _fits(forward: Forward, batch: int, channels: int, side: int, device: torch.device, precision: str) -> bool:
    try:
        with torch.inference_mode():
            infer_batch(forward, torch.zeros(batch, channels, side, side, dtype=torch.uint8), device, precision)
        torch.cuda.synchronize(device)
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        torch.cuda.empty_cache()


def auto_batch_size(model: nn.Module, forward: Forward, image_shape: tuple[int, int, int], device: torch.device | str,
                    precision: str = "fp32", start: int = AUTO_START, limit: int = AUTO_LIMIT) -> int:
    """The largest batch (`start` times a power of two, at most `limit`) whose forward fits on a CUDA device, for
    stored images of `image_shape` `(C, H, W)`; remembered per (model, image side, device, precision). On the
    CPU: `inference_batch_size(start, input size)` (no search)."""
    device = torch.device(device)
    size = int(getattr(getattr(model, "preprocess", None), "input_size", image_shape[-1]))
    if device.type != "cuda":
        return inference_batch_size(start, size, device)
    key = (id(model), image_shape[-1], str(device), resolve_precision(precision, device))
    if key not in _found:
        best, batch = 0, start
        while batch <= limit and _fits(forward, batch, image_shape[0], image_shape[-1], device, precision):
            best, batch = batch, batch * 2
        while best == 0 and batch > 1:  # even `start` does not fit: halve
            batch //= 2
            best = batch if _fits(forward, batch, image_shape[0], image_shape[-1], device, precision) else 0
        _found[key] = max(1, best)
    return _found[key]


def resolve_batch_size(batch_size: BatchSize, model: nn.Module, forward: Forward, images: Images,
                       device: torch.device | str, precision: str = "fp32") -> int:
    """An explicit batch as `inference_batch_size` makes it (the CPU pixel rule), or the `auto` one."""
    if batch_size == "auto":
        first = images[torch.zeros(1, dtype=torch.long)]
        return auto_batch_size(model, forward, tuple(first.shape[1:]), device, precision)  # type: ignore[arg-type]
    size = int(getattr(getattr(model, "preprocess", None), "input_size", 0))
    return inference_batch_size(int(batch_size), size, device)


@torch.inference_mode()
def batched_inference(forward: Forward, images: Images, batch_size: int, device: torch.device | str = "cpu",
                      precision: str = "fp32", views: Views | None = None, desc: str = "predict", progress: bool = True,
                      prefetch: int = 2, on_cpu: bool = True) -> torch.Tensor:
    """`forward` over uint8 `images` `[N, C, H, W]` in order, `batch_size` at a time -> float32 `[N, ...]` (on the
    CPU, or on `device` with `on_cpu=False`). Batches are read ahead (`prefetch`) in a background thread."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    sampler = EpochSampler(len(images), batch_size, shuffle=False)

    def build(idx: torch.Tensor) -> tuple[torch.Tensor, Views | None]:
        x = images[idx]
        v = None if views is None else Views(views.boxes[idx], views.flips[idx])
        return (x.pin_memory() if cuda else x), v

    outs = []
    shown = None if (progress and len(sampler) >= 4) else True
    # off a terminal (nohup, CI, logs) a line every few seconds instead of the bar, for long passes
    line = ProgressLine(len(images), desc, unit="img", enabled=progress and len(images) >= 2000
                        and not bool(getattr(sys.stderr, "isatty", lambda: False)()))
    for x, v in tqdm(ahead(iter(sampler), build, prefetch), total=len(sampler), desc=desc, unit="batch", leave=False,
                     disable=shown):
        out = infer_batch(forward, x, device, precision, v).float()
        outs.append(out.to("cpu", non_blocking=True) if (on_cpu and cuda) else out)
        line.update(len(x))
    if line.enabled and line.lines:
        line.close()
    if cuda:
        torch.cuda.synchronize(device)  # the non-blocking copies to the host are complete
    return torch.cat(outs) if outs else torch.empty(0)
