"""Supervised training on labels: linear probe (head only) or full finetune."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taskdistill.data.views import Views, model_input, random_views
from taskdistill.engine.batches import Batch, batch_rows


class SupervisedTask:
    """Cross-entropy on `{"images": uint8 [B, C, H, W], "labels": [B]}` with random crop/flip augmentation.

    `head_only=True` is a linear probe: only the classifier trains and the backbone stays in eval mode
    (its batch-norm statistics do not move). `freeze_bn=True` trains every weight but keeps batch-norm
    layers on their pretrained statistics, which holds up better with a few dozen labels per batch.
    """

    def __init__(self, model: nn.Module, augment: str = "crop-flip", label_smoothing: float = 0.0,
                 head_only: bool = False, freeze_bn: bool = False, seed: int = 0) -> None:
        self.model = model
        self.augment = augment
        self.label_smoothing = label_smoothing
        self.head_only = head_only
        self.freeze_bn = freeze_bn
        self.rng = np.random.default_rng(seed)
        for p in self.model.parameters():
            p.requires_grad_(not head_only)
        if head_only:
            for p in self.model.get_classifier().parameters():
                p.requires_grad_(True)

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        if self.head_only:
            self.model.eval()
            self.model.get_classifier().train(mode)
        else:
            self.model.train(mode)
            if self.freeze_bn:
                for m in self.model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        images, labels = batch["images"], batch["labels"]
        views = None
        if self.augment != "none":
            # Drawn for the global batch under DDP (every rank the same draws), then this rank's rows.
            total, rows = batch_rows(batch, len(images))
            drawn = random_views(total, self.rng, crop=self.augment == "crop-flip", flip=True)
            views = Views(drawn.boxes[rows], drawn.flips[rows])
        x = model_input(images, self.model.preprocess, views)
        logits = self.model(x)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        acc = (logits.detach().argmax(1) == labels).float().mean()
        return {"loss": loss, "ce": loss.detach(), "acc": acc}
