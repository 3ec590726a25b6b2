"""Task-oriented transfer per pixel: the student matches the finetuned teacher's cached, softened
per-pixel predictions on unlabeled images."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from taskdistill.cache.dense_outputs import DenseOutputs
from taskdistill.data.mask_views import render_masks
from taskdistill.data.views import Views, model_input
from taskdistill.engine.batches import Batch
from taskdistill.losses.dense_kd import dense_kd_loss
from taskdistill.models.segmentation import resize_logits
from taskdistill.tasks.cached_targets import prepare_cached, views_and_targets


class DenseDistillTask:
    """Per-pixel KL(teacher_T || student_T) * T^2 on `{"images", "indices", "views"}` batches (`ViewBatches`).

    `teacher_logits`: the teacher's logits `[C, h, w]` for view v of transfer image n, stored at reduced
    resolution (`DenseOutputs`, or an in-memory `[N, V, K, h, w]` tensor). The student sees exactly that view
    at its own input size S; the stored logits are resized to its `[B, K, S, S]` output with `resize_logits`.
    When a batch carries `"masks"` (uint8 `[B, H, W]`), pixels labeled `ignore_index` are left out of the loss.
    """

    def __init__(self, student: nn.Module, teacher_logits: DenseOutputs | torch.Tensor, temperature: float,
                 view_seed: int, ignore_index: int = 255) -> None:
        self.student = student
        self.teacher = DenseOutputs.wrap(teacher_logits)
        if self.teacher.grid[0] != student.num_classes:
            raise ValueError(f"the teacher's stored logits have {self.teacher.grid[0]} classes, the student "
                             f"{student.num_classes}; distil from a teacher trained on the same classes")
        self.temperature = temperature
        self.view_seed = view_seed
        self.ignore_index = ignore_index

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.student.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.student.train(mode)

    def prepare(self, batch: Batch) -> Batch:
        """Host-side work, run ahead by the loop's prefetch thread (`cached_targets.prepare_cached`)."""
        return prepare_cached(batch, self.teacher, self.view_seed)

    def _views_and_target(self, batch: Batch, device: torch.device) -> tuple[Views, torch.Tensor]:
        return views_and_targets(batch, self.teacher, self.view_seed, device)

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        views, stored = self._views_and_target(batch, batch["images"].device)
        x = model_input(batch["images"], self.student.preprocess, views)
        logits = self.student(x)  # [B, K, S, S]
        target = resize_logits(stored, logits.shape[-2:])
        valid = None
        if "masks" in batch:
            valid = render_masks(batch["masks"], logits.shape[-1], views).to(x.device) != self.ignore_index
        loss = dense_kd_loss(logits, target, self.temperature, valid)
        agree = (logits.detach().argmax(1) == target.argmax(1)).float().mean()
        return {"loss": loss, "kl": loss.detach(), "pixel_agree": agree}
