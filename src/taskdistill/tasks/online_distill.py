"""Task-oriented distillation with the teacher run on the fly: for transfer sets read as a stream.

The same loss as `DistillTask` (KL between softened teacher and student predictions, times T^2) on the
same views, but the teacher's logits come from a forward pass on each batch instead of a cache, because
a stream has no stable row number to key a cache by (`data.streaming`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from taskdistill.cache.teacher_outputs import teacher_forward
from taskdistill.data.views import Views, model_input, replay_views
from taskdistill.engine.batches import Batch, on_host
from taskdistill.losses.kd import kd_kl_loss


class OnlineDistillTask:
    """KL(teacher_T || student_T) * T^2 on `{"images": uint8 [B, C, H, W], "indices": [B], "views": [B]}`.

    Teacher and student see the same view (`replay_views(indices, views, view_seed)`), each at its own
    resolution; the teacher runs without gradients and stays in eval mode; only the student trains.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, temperature: float, view_seed: int) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.student, self.teacher = student, teacher
        self.temperature, self.view_seed = temperature, view_seed

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.student.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.student.train(mode)
        self.teacher.eval()

    def prepare(self, batch: Batch) -> Batch:
        """Host-side view replay (`view_boxes` `[B, 4]`, `view_flips` `[B]`), run ahead by the prefetch thread."""
        views = replay_views(on_host(batch["indices"]), on_host(batch["views"]), self.view_seed)
        return {**batch, "view_boxes": views.boxes, "view_flips": views.flips}

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        if "view_boxes" not in batch:
            batch = self.prepare(batch)
        views = Views(on_host(batch["view_boxes"]), on_host(batch["view_flips"]))
        with torch.no_grad():
            target = teacher_forward(self.teacher, batch["images"], views, "logits").float()
        logits = self.student(model_input(batch["images"], self.student.preprocess, views))
        loss = kd_kl_loss(logits, target, self.temperature)
        agree = (logits.detach().argmax(1) == target.argmax(1)).float().mean()
        return {"loss": loss, "kl": loss.detach(), "agree": agree}
