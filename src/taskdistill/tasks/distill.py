"""Task-oriented distillation: the student matches the teacher's cached, softened task predictions."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from taskdistill.data.views import model_input, replay_views
from taskdistill.engine.batches import Batch
from taskdistill.losses.kd import kd_kl_loss


class DistillTask:
    """KL(teacher_T || student_T) * T^2 on `{"images", "indices", "views"}` batches.

    `teacher_logits`: `[N, V, K]`, the teacher's outputs for view v of transfer image n, computed once
    (see `taskdistill.cache`); the student is shown exactly that view at its own resolution, so the
    teacher never runs during distillation.
    """

    def __init__(self, student: nn.Module, teacher_logits: torch.Tensor, temperature: float, view_seed: int) -> None:
        self.student = student
        self.teacher_logits = teacher_logits
        self.temperature = temperature
        self.view_seed = view_seed

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.student.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.student.train(mode)

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        indices, view_ids = batch["indices"].cpu(), batch["views"].cpu()
        views = replay_views(indices, view_ids, self.view_seed)
        x = model_input(batch["images"], self.student.preprocess, views)
        target = self.teacher_logits[indices, view_ids].to(x.device, torch.float32)
        logits = self.student(x)
        loss = kd_kl_loss(logits, target, self.temperature)
        agree = (logits.detach().argmax(1) == target.argmax(1)).float().mean()
        return {"loss": loss, "kl": loss.detach(), "agree": agree}
