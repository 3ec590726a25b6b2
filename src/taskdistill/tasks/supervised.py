"""Supervised training on labels, one per image or one per pixel: a head on a frozen backbone, or a full finetune."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taskdistill.data.mask_views import render_masks
from taskdistill.data.views import Views, model_input, random_views
from taskdistill.engine.batches import Batch, batch_rows
from taskdistill.losses.dense_kd import seg_cross_entropy
from taskdistill.models.segmentation import resize_logits


class SupervisedTask:
    """Cross-entropy with random crop/flip on `{"images": uint8 [B, C, H, W], "labels": [B]}`, or with
    `per_pixel=True` on `{"images", "masks": uint8 [B, H, W]}` (a dense model, scored against the mask seen
    through the same view at its input size; `ignore_index` pixels left out).

    `head_only=True` trains only the head (the classifier; a dense model's FPN head and classifier) on a
    frozen backbone kept in eval mode and run without gradients: a linear probe for classification.
    `freeze_bn=True` trains every weight but keeps the backbone's batch-norm layers on their pretrained
    statistics, which holds up better with a few dozen labels per batch (a dense head's own batch norm still
    adapts: it starts untrained).
    """

    def __init__(self, model: nn.Module, augment: str = "crop-flip", label_smoothing: float = 0.0,
                 head_only: bool = False, freeze_bn: bool = False, seed: int = 0, per_pixel: bool = False,
                 ignore_index: int = 255) -> None:
        self.model = model
        self.augment = augment
        self.label_smoothing = label_smoothing
        self.head_only = head_only
        self.freeze_bn = freeze_bn
        self.per_pixel = per_pixel
        self.ignore_index = ignore_index
        self.rng = np.random.default_rng(seed)
        # the head: what trains alone (head_only) and keeps its own batch norm (freeze_bn)
        self.head: nn.Module | None = None
        if head_only or freeze_bn:
            self.head = model.head if per_pixel else model.get_classifier()
        for p in self.model.parameters():
            p.requires_grad_(not head_only)
        if self.head is not None:
            for p in self.head.parameters():
                p.requires_grad_(True)

    def state_dict(self) -> dict[str, Any]:
        """The augmentation generator's state (saved in mid-stage checkpoints, `engine.train_state`)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        if self.head_only and self.head is not None:
            self.model.eval()
            self.head.train(mode)
            return
        self.model.train(mode)
        if self.freeze_bn and self.head is not None:
            in_head = {id(m) for m in self.head.modules()}
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in in_head:
                    m.eval()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, 3, S, S]` -> `[B, K]` (or `[B, K, S, S]` per pixel); the backbone runs without gradients when
        only the head trains."""
        if not self.head_only:
            return self.model(x)
        with torch.no_grad():
            feats = self.model.forward_features(x)
        out = self.model.forward_head(feats)
        return resize_logits(out, x.shape[-2:]) if self.per_pixel else out

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["images"]
        views = None
        if self.augment != "none":
            # Drawn for the global batch under DDP (every rank the same draws), then this rank's rows.
            total, rows = batch_rows(batch, len(images))
            drawn = random_views(total, self.rng, crop=self.augment == "crop-flip", flip=True)
            views = Views(drawn.boxes[rows], drawn.flips[rows])
        x = model_input(images, self.model.preprocess, views)
        logits = self.logits(x)
        if not self.per_pixel:
            labels = batch["labels"]
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
            acc = (logits.detach().argmax(1) == labels).float().mean()
            return {"loss": loss, "ce": loss.detach(), "acc": acc}
        target = render_masks(batch["masks"], self.model.preprocess.input_size, views).to(x.device)
        loss = seg_cross_entropy(logits, target, self.ignore_index)
        labeled = target != self.ignore_index
        correct = (logits.detach().argmax(1) == target.long()) & labeled
        acc = correct.sum().float() / labeled.sum().clamp(min=1).float()
        # the loss is a mean over labeled pixels: under DDP ranks are weighted by their count (see `fit`)
        return {"loss": loss, "ce": loss.detach(), "pixel_acc": acc, "loss_weight": labeled.sum()}
