"""Stage 3 that keeps distilling: the labels' loss plus the distillation loss on transfer rows, in one step.

A plain finetune on 10 labels per class pulls the distilled student towards those few images and loses part
of what 60,000 transfer images taught it (BENCHMARKS.md, "Stage 3"). Keeping the stage-2 loss on a batch of
transfer images in every step anchors the student to the teacher's function while the labels correct it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import nn

from taskdistill.engine.batches import TRANSFER_PREFIX, Batch, transfer_part
from taskdistill.tasks.supervised import SupervisedTask


class TransferTask(Protocol):
    """A task that learns from cached teacher outputs on `ViewBatches` batches (distillation, pseudo-labels)."""

    def prepare(self, batch: Batch) -> Batch: ...

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]: ...


class AnchoredFinetuneTask:
    """`labels(batch) + weight * transfer(transfer rows)` on `AnchoredBatches` batches `{"images" [B, C, H, W],
    "labels" [B] (or "masks"), "transfer_images" [b, C, H, W], "transfer_indices" [b], "transfer_views" [b]}`.

    `labels` is the supervised task of the finetune (its augmentation, frozen batch norm, train mode and
    generator state are the stage's); `transfer` the distillation task of stage 2 over the same cache, on the
    same model. Reported scalars: the total `loss`, the labels' `ce` and the transfer part's `distill`.
    """

    def __init__(self, labels: SupervisedTask, transfer: TransferTask, weight: float) -> None:
        self.labels, self.transfer, self.weight = labels, transfer, weight

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return self.labels.trainable_parameters()

    def modules(self) -> list[nn.Module]:
        """The model both parts train (synced under DDP, saved in mid-stage checkpoints)."""
        return [self.labels.model]

    def train(self, mode: bool = True) -> None:
        self.labels.train(mode)  # the finetune's modes (frozen batch norm) hold for the transfer rows too

    def state_dict(self) -> dict[str, Any]:
        return self.labels.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels.load_state_dict(state)

    def prepare(self, batch: Batch) -> Batch:
        """The transfer rows' views replayed and cached targets gathered (the loop's prefetch thread)."""
        done = self.transfer.prepare(transfer_part(batch))
        return {**batch, **{TRANSFER_PREFIX + k: v for k, v in done.items()}}

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        labeled = {k: v for k, v in batch.items() if not k.startswith(TRANSFER_PREFIX)}
        out = self.labels(labeled)
        distill = self.transfer(transfer_part(batch))
        loss = out["loss"] + self.weight * distill["loss"]
        return {"loss": loss, "ce": out["loss"].detach(), "distill": distill["loss"].detach()}
