"""Pseudo-label training: the student learns the teacher's hard labels (the argmax of its cached outputs for
the view it sees) with cross-entropy, the way hard-label auto-labelling tools train a small model. The
reference that shows what distilling the teacher's softened distribution buys over its decisions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from taskdistill.data.views import model_input
from taskdistill.engine.batches import Batch
from taskdistill.tasks.distill import DistillTask


class PseudoLabelTask(DistillTask):
    """Cross-entropy to `argmax` of the teacher's cached outputs, on `{"images", "indices", "views"}` batches.

    Shares `DistillTask`'s cache, view replay and prefetching; only the loss differs.
    """

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        views, target = self._views_and_target(batch, batch["images"].device)
        logits = self.student(model_input(batch["images"], self.student.preprocess, views))
        hard = target.argmax(1)  # [B]: the teacher's decision (argmax is the same at any temperature)
        loss = F.cross_entropy(logits, hard)
        agree = (logits.detach().argmax(1) == hard).float().mean()
        return {"loss": loss, "ce": loss.detach(), "agree": agree}
