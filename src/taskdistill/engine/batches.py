"""Index batches for one epoch, and the batch sources that turn indices into tensors.

Under DDP `schedule.batch_size` is the *global* batch: every rank walks the same seeded order of batches
and takes its own contiguous part of each (`rank_part`), so a run on N processes takes the same steps on
the same batches as one process, and DDP's averaged gradient is the one-process gradient.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch

from taskdistill import distributed
from taskdistill.data.batch import Batch
from taskdistill.data.image_set import ImageSet
from taskdistill.data.segmentation import SegmentationSet
from taskdistill.distributed import rank_part

# Added to a batch by `fit` under DDP: int64 [2] = (first row of this rank's part in the global batch,
# global batch size). Tasks that draw random augmentation per row draw it for the global batch and keep
# their rows (`batch_rows`), so every rank's random stream, and the result, match one process.
ROWS_KEY = "batch_rows"
# Batch entries that stay on the host when `fit` moves a batch to the device: they are read by host code
# (view replay, memory-mapped cache gathers, `batch_rows`), so moving them would cost a copy there and a
# sync back. "view_boxes" / "view_flips" are views a task's `prepare` replayed ahead (`Views` fields).
# `TRANSFER_PREFIX` + a key: the same entry of the transfer rows an `AnchoredBatches` batch carries.
TRANSFER_PREFIX = "transfer_"
_HOST = ("indices", "views", "view_boxes", "view_flips")
HOST_KEYS: frozenset[str] = frozenset({*_HOST, ROWS_KEY, *(TRANSFER_PREFIX + k for k in _HOST)})


def on_host(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when it is on the CPU (no call, no copy), else a copy there (a sync: avoid in a step)."""
    return t if t.device.type == "cpu" else t.cpu()


CPU_REFERENCE_SIDE = 128  # inference batches on the CPU hold at most eval_batch_size images of this side


def inference_batch_size(requested: int, input_size: int, device: torch.device | str = "cpu") -> int:
    """The batch size for inference at `input_size` px: `requested` on a GPU and for inputs up to 128 px; on the
    CPU above that, scaled down so a batch holds no more pixels than `requested` images of 128 px (activation
    memory grows with pixels: 128 images at 224 px through EfficientNet-Lite0 peaked at 4.3 GB of RSS, see
    BENCHMARKS.md). The outputs do not depend on it (models run in eval mode)."""
    if torch.device(device).type != "cpu" or input_size <= CPU_REFERENCE_SIDE:
        return requested
    return max(1, requested * CPU_REFERENCE_SIDE ** 2 // input_size ** 2)


def batch_rows(batch: Batch, local_size: int) -> tuple[int, slice]:
    """(global batch size, slice of this rank's rows in it); `(local_size, all rows)` outside DDP."""
    rows = batch.get(ROWS_KEY)
    if rows is None:
        return local_size, slice(0, local_size)
    start, total = (int(v) for v in rows.tolist())
    return total, slice(start, start + local_size)


class EpochSampler:
    """Shuffled (by `seed` and epoch) or ordered index batches over `n` items; rank-aware.

    With `world_size > 1` each batch is this rank's part of the global batch (`rank_part`); the number of
    batches per epoch does not depend on the world size.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        if n <= 0:
            raise ValueError("cannot sample batches from an empty set")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last = drop_last and n >= batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[torch.Tensor]:
        """The epoch's global batches, the same on every rank."""
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        else:
            order = torch.arange(self.n)
        batches = list(order.split(self.batch_size))
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[torch.Tensor]:
        for b in self.global_batches():
            yield rank_part(b, self.rank, self.world_size)

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)


class BatchSource(Protocol):
    """Something the loop can draw batches from: `len()` items, and `batch(indices, epoch)`."""

    def __len__(self) -> int: ...

    def batch(self, indices: torch.Tensor, epoch: int) -> Batch: ...


@runtime_checkable
class StreamSource(Protocol):
    """A source read as a stream (no random access): a defined number of steps per epoch, and this rank's
    batches of one epoch. `epoch_batches` must yield exactly `steps_per_epoch(batch_size)` batches on every
    rank, each this rank's part of a global batch of `batch_size` rows."""

    def __len__(self) -> int: ...

    def steps_per_epoch(self, batch_size: int) -> int: ...

    def epoch_batches(self, epoch: int, batch_size: int, rank: int, world_size: int) -> Iterator[Batch]: ...


class ImageBatches:
    """Batches of `{"images": uint8 [B, C, H, W], **targets, "indices": [B]}` from a labeled set: its
    `targets` are `"labels": [B]` for an `ImageSet`, `"masks": uint8 [B, H, W]` for a `SegmentationSet`."""

    def __init__(self, data: ImageSet | SegmentationSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, indices: torch.Tensor, epoch: int) -> Batch:
        targets = {name: values[indices] for name, values in self.data.targets.items()}
        return {"images": self.data.images[indices], **targets, "indices": indices}


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


class AnchoredBatches:
    """Labeled batches with transfer rows attached: `ImageBatches` of the labeled set, plus `TRANSFER_PREFIX` +
    each entry of a `ViewBatches` batch of `transfer_batch` transfer images (stage 3 that keeps distilling).

    The loop samples the labeled set (its length is the labeled set's); the transfer rows of a batch are drawn
    from a generator seeded by (seed, epoch, the batch's labeled indices), so they need no state to replay on
    resume. Under DDP each rank draws its share (`transfer_batch / world_size` rows) from its own labeled rows:
    the global step sees `transfer_batch` rows, but other ones than a single process draws.
    """

    def __init__(self, labeled: ImageBatches, transfer: ViewBatches, transfer_batch: int, seed: int) -> None:
        if len(transfer) == 0:
            raise ValueError("stage 3 keeps distilling over the transfer set, which is empty")
        self.labeled, self.transfer, self.transfer_batch, self.seed = labeled, transfer, transfer_batch, seed

    def __len__(self) -> int:
        return len(self.labeled)

    def transfer_rows(self, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        """This rank's transfer indices `[b]` for the labeled batch `indices` of `epoch`."""
        key = hash((self.seed, epoch, *indices.tolist())) & 0x7FFF_FFFF_FFFF_FFFF  # ints hash the same in every process
        share = max(1, self.transfer_batch // distributed.info().world_size)
        return torch.randint(len(self.transfer), (share,), generator=torch.Generator().manual_seed(key))

    def batch(self, indices: torch.Tensor, epoch: int) -> Batch:
        out = self.labeled.batch(indices, epoch)
        extra = self.transfer.batch(self.transfer_rows(indices, epoch), epoch)
        out.update({TRANSFER_PREFIX + k: v for k, v in extra.items()})
        return out


def transfer_part(batch: Batch) -> Batch:
    """The transfer rows of an `AnchoredBatches` batch, under their plain keys."""
    n = len(TRANSFER_PREFIX)
    return {k[n:]: v for k, v in batch.items() if k.startswith(TRANSFER_PREFIX)}
