"""Task-oriented distillation: the student matches the teacher's cached, softened task predictions."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from taskdistill.cache.teacher_outputs import TeacherOutputs
from taskdistill.data.views import Views, model_input
from taskdistill.engine.batches import Batch
from taskdistill.losses.kd import kd_kl_loss, kd_kl_loss_from_probs
from taskdistill.tasks.cached_targets import prepare_cached, views_and_targets


class DistillTask:
    """KL(teacher_T || student_T) * T^2 on `{"images", "indices", "views"}` batches.

    `teacher_outputs`: the teacher's outputs for view v of transfer image n, computed once (stored
    `TeacherOutputs` from `taskdistill.cache`, or an in-memory `[N, V, K]` logits tensor): logits, or
    top-k probabilities already softened at this temperature. The student is shown exactly that view
    at its own resolution, so the teacher never runs during distillation.
    """

    def __init__(self, student: nn.Module, teacher_outputs: TeacherOutputs | torch.Tensor, temperature: float,
                 view_seed: int) -> None:
        self.student = student
        self.teacher_outputs = TeacherOutputs.wrap(teacher_outputs)
        stored_t = self.teacher_outputs.temperature
        if self.teacher_outputs.is_probabilities and stored_t is not None and abs(stored_t - temperature) > 1e-6:
            raise ValueError(f"the cached soft labels were taken at temperature {stored_t}, distillation uses "
                             f"{temperature}; rebuild the cache at the distillation temperature")
        self.temperature = temperature
        self.view_seed = view_seed

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.student.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.student.train(mode)

    def prepare(self, batch: Batch) -> Batch:
        """Host-side work, run ahead by the loop's prefetch thread (`cached_targets.prepare_cached`)."""
        return prepare_cached(batch, self.teacher_outputs, self.view_seed)

    def _views_and_target(self, batch: Batch, device: torch.device) -> tuple[Views, torch.Tensor]:
        return views_and_targets(batch, self.teacher_outputs, self.view_seed, device)

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        views, target = self._views_and_target(batch, batch["images"].device)
        x = model_input(batch["images"], self.student.preprocess, views)
        logits = self.student(x)
        if self.teacher_outputs.is_probabilities:
            loss = kd_kl_loss_from_probs(logits, target, self.temperature)
        else:
            loss = kd_kl_loss(logits, target, self.temperature)
        agree = (logits.detach().argmax(1) == target.argmax(1)).float().mean()
        return {"loss": loss, "kl": loss.detach(), "agree": agree}
