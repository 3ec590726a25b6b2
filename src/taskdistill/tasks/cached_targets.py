"""What every task that learns from cached teacher outputs does on the host before its step: replay the
views the cache was built on and gather the cached targets, in the loop's prefetch thread."""

from __future__ import annotations

from typing import Protocol

import torch

from taskdistill.data.views import Views, replay_views
from taskdistill.engine.batches import Batch, on_host


class CachedTargets(Protocol):
    """Cached teacher outputs: `gather(indices [B], views [B])` -> float32 targets `[B, ...]`."""

    def gather(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor: ...


def prepare_cached(batch: Batch, targets: CachedTargets, view_seed: int) -> Batch:
    """`batch` plus the replayed views (`view_boxes` `[B, 4]`, `view_flips` `[B]`) and the gathered `targets`,
    so the step only computes (run ahead by the loop's prefetch thread, through the task's `prepare`)."""
    indices, view_ids = on_host(batch["indices"]), on_host(batch["views"])
    views = replay_views(indices, view_ids, view_seed)
    return {**batch, "view_boxes": views.boxes, "view_flips": views.flips, "targets": targets.gather(indices, view_ids)}


def views_and_targets(batch: Batch, targets: CachedTargets, view_seed: int,
                      device: torch.device) -> tuple[Views, torch.Tensor]:
    """The batch's views and its targets on `device` (prepared now if the loop did not prepare it ahead)."""
    if "targets" not in batch:
        batch = prepare_cached(batch, targets, view_seed)
    views = Views(on_host(batch["view_boxes"]), on_host(batch["view_flips"]))
    return views, batch["targets"].to(device, non_blocking=True)
