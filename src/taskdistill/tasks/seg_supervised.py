"""Supervised segmentation: per-pixel cross-entropy on labeled masks, with the same random crop/flip
applied to image and mask."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from taskdistill.data.mask_views import render_masks
from taskdistill.data.views import Views, model_input, random_views
from taskdistill.engine.batches import Batch, batch_rows
from taskdistill.losses.dense_kd import seg_cross_entropy
from taskdistill.models.segmentation import resize_logits


class SegSupervisedTask:
    """Cross-entropy (ignore index left out) on `{"images": uint8 [B, C, H, W], "masks": uint8 [B, H, W]}`.

    The model (`SegmentationModel`) sees the view at its input size S and is scored against the mask seen
    through the same view at S. `head_only=True` trains only the FPN head and classifier on a frozen backbone
    (in eval mode, run without gradients); `freeze_bn=True` keeps the backbone's batch-norm statistics fixed
    while everything trains (the head's own batch norm still adapts: it starts untrained).
    """

    def __init__(self, model: nn.Module, augment: str = "crop-flip", head_only: bool = False, freeze_bn: bool = False,
                 ignore_index: int = 255, seed: int = 0) -> None:
        self.model = model
        self.augment = augment
        self.head_only = head_only
        self.freeze_bn = freeze_bn
        self.ignore_index = ignore_index
        self.rng = np.random.default_rng(seed)
        for p in self.model.backbone.parameters():
            p.requires_grad_(not head_only)
        for p in self.model.head.parameters():
            p.requires_grad_(True)

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)
        if self.head_only:
            self.model.backbone.eval()
        elif self.freeze_bn:
            for m in self.model.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, 3, S, S]` -> `[B, K, S, S]`; the backbone runs without gradients when only the head trains."""
        if not self.head_only:
            return self.model(x)
        with torch.no_grad():
            feats = self.model.forward_features(x)
        return resize_logits(self.model.forward_head(feats), x.shape[-2:])

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        images, masks = batch["images"], batch["masks"]
        views = None
        if self.augment != "none":
            # Drawn for the global batch under DDP (every rank the same draws), then this rank's rows.
            total, rows = batch_rows(batch, len(images))
            drawn = random_views(total, self.rng, crop=self.augment == "crop-flip", flip=True)
            views = Views(drawn.boxes[rows], drawn.flips[rows])
        size = self.model.preprocess.input_size
        x = model_input(images, self.model.preprocess, views)
        target = render_masks(masks, size, views).to(x.device)
        logits = self.logits(x)
        loss = seg_cross_entropy(logits, target, self.ignore_index)
        labeled = target != self.ignore_index
        correct = (logits.detach().argmax(1) == target.long()) & labeled
        acc = correct.sum().float() / labeled.sum().clamp(min=1).float()
        # the loss is a mean over labeled pixels: under DDP ranks are weighted by their count (see `fit`)
        return {"loss": loss, "ce": loss.detach(), "pixel_acc": acc, "loss_weight": labeled.sum()}
