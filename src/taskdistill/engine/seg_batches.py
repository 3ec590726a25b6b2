"""The batch source of supervised segmentation: images and their masks."""

from __future__ import annotations

import torch

from taskdistill.data.segmentation import SegmentationSet
from taskdistill.engine.batches import Batch


class SegBatches:
    """Batches of `{"images": uint8 [B, C, H, W], "masks": uint8 [B, H, W], "indices": [B]}` from a SegmentationSet."""

    def __init__(self, data: SegmentationSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, indices: torch.Tensor, epoch: int) -> Batch:
        return {"images": self.data.images[indices], "masks": self.data.masks[indices], "indices": indices}
