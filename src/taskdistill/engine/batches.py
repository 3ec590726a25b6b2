"""Index batches for one epoch, and the batch sources that turn indices into tensors.

The sampler is the only place that knows about ranks: under DDP each rank takes every `world_size`-th
batch of the same shuffled order, so the loop itself stays the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from taskdistill.data.image_set import ImageSet

Batch = dict[str, torch.Tensor]


class EpochSampler:
    """Shuffled (by `seed` and epoch) or ordered index batches over `n` items; rank-aware."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        if n <= 0:
            raise ValueError("cannot sample batches from an empty set")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last = drop_last and n >= batch_size * world_size
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[torch.Tensor]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        else:
            order = torch.arange(self.n)
        batches = list(order.split(self.batch_size))
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        usable = len(batches) - len(batches) % self.world_size if self.world_size > 1 else len(batches)
        return batches[:usable]

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield from self._all_batches()[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self._all_batches()) // self.world_size


class BatchSource(Protocol):
    """Something the loop can draw batches from: `len()` items, and `batch(indices, epoch)`."""

    def __len__(self) -> int: ...

    def batch(self, indices: torch.Tensor, epoch: int) -> Batch: ...


class ImageBatches:
    """Batches of `{"images": uint8 [B, C, H, W], "labels": [B], "indices": [B]}` from an ImageSet."""

    def __init__(self, data: ImageSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, indices: torch.Tensor, epoch: int) -> Batch:
        return {"images": self.data.images[indices], "labels": self.data.labels[indices], "indices": indices}


class ViewBatches(ImageBatches):
    """Like ImageBatches plus `"views": [B]`: which of `num_views` cached views each image shows this epoch."""

    def __init__(self, data: ImageSet, num_views: int, seed: int) -> None:
        super().__init__(data)
        self.num_views, self.seed = num_views, seed
        self._epoch, self._views = -1, torch.empty(0, dtype=torch.long)

    def _views_of(self, epoch: int) -> torch.Tensor:
        """The view of every image for `epoch`, drawn once per epoch (not once per batch)."""
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._epoch, self._views = epoch, torch.randint(self.num_views, (len(self.data),), generator=gen)
        return self._views

    def batch(self, indices: torch.Tensor, epoch: int) -> Batch:
        out = super().batch(indices, epoch)
        out["views"] = self._views_of(epoch)[indices]
        return out
