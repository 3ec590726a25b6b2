"""Task-agnostic transfer for segmentation: the student's dense features, projected to the teacher's
width, match the frozen pretrained teacher's backbone feature map location by location (cosine)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from taskdistill.cache.dense_outputs import DenseOutputs, resize_grid
from taskdistill.data.views import Views, model_input
from taskdistill.engine.batches import Batch
from taskdistill.losses.dense_kd import dense_cosine_loss
from taskdistill.tasks.cached_targets import prepare_cached, views_and_targets


class DenseProjector(nn.Module):
    """Student features `[B, Ds, h, w]` -> `[B, Dt, h, w]`: 1x1 conv-BN-ReLU-1x1 conv (`hidden=0`: one 1x1 conv)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"projector dims must be positive, got {in_dim} -> {out_dim}")
        width = max(in_dim, out_dim) if hidden is None else int(hidden)
        if width < 0:
            raise ValueError(f"hidden must be >= 0 or None, got {hidden}")
        if width == 0:
            self.net: nn.Module = nn.Conv2d(in_dim, out_dim, 1)
        else:
            self.net = nn.Sequential(nn.Conv2d(in_dim, width, 1, bias=False), nn.BatchNorm2d(width),
                                     nn.ReLU(inplace=True), nn.Conv2d(width, out_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DenseFeatureDistillTask:
    """Dense feature matching on `{"images", "indices", "views"}` batches (`ViewBatches`).

    `teacher_features`: the frozen teacher's feature map `[Dt, h, w]` for view v of transfer image n
    (`DenseOutputs` of kind `dense-features`, or an in-memory `[N, V, Dt, h, w]` tensor). The student's fused
    head features `[B, Ds, S/s, S/s]` (`forward_head(..., pre_logits=True)`) go through the projector and are
    area-averaged (or bilinearly resized) to the teacher's `h x w` grid; the loss is the mean of
    `1 - cosine` over locations. Trains the student backbone, its FPN (not the classifier) and the projector.
    """

    def __init__(self, student: nn.Module, projector: nn.Module, teacher_features: DenseOutputs | torch.Tensor,
                 view_seed: int = 0) -> None:
        self.student = student
        self.projector = projector
        self.teacher = DenseOutputs.wrap(teacher_features)
        self.view_seed = view_seed

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        skip = {id(p) for p in self.student.get_classifier().parameters()}
        student = [p for p in self.student.parameters() if p.requires_grad and id(p) not in skip]
        return student + [p for p in self.projector.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.student.train(mode)
        self.projector.train(mode)

    def prepare(self, batch: Batch) -> Batch:
        """Host-side work, run ahead by the loop's prefetch thread (`cached_targets.prepare_cached`)."""
        return prepare_cached(batch, self.teacher, self.view_seed)

    def _views_and_target(self, batch: Batch, device: torch.device) -> tuple[Views, torch.Tensor]:
        return views_and_targets(batch, self.teacher, self.view_seed, device)

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        views, target = self._views_and_target(batch, batch["images"].device)  # target [B, Dt, h, w]
        x = model_input(batch["images"], self.student.preprocess, views)
        fused = self.student.forward_head(self.student.forward_features(x), pre_logits=True)
        pred = resize_grid(self.projector(fused), target.shape[-1])
        loss = dense_cosine_loss(pred, target)
        return {"loss": loss, "cosine": loss.detach(), "similarity": 1.0 - loss.detach()}
