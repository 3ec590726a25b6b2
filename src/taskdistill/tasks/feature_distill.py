"""Task-agnostic distillation: the student matches the frozen, not finetuned teacher's pooled features.

This is the baseline that task-oriented transfer (Vemulapalli et al., ICML 2024) is compared against: on
the unlabeled transfer set the student's pooled features, mapped to the teacher's width by a small
projector, are pulled towards the teacher's cached features of the same view with a cosine and/or a
contrastive loss. The projector is thrown away afterwards and the student is finetuned on labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from taskdistill.cache.teacher_outputs import TeacherOutputs
from taskdistill.data.views import Views, model_input
from taskdistill.engine.batches import Batch
from taskdistill.losses.feature import contrastive_feature_loss, cosine_feature_loss
from taskdistill.tasks.cached_targets import prepare_cached, views_and_targets

FeatureLoss = Literal["cosine", "contrastive", "cosine+contrastive"]
FEATURE_LOSSES: tuple[str, ...] = ("cosine", "contrastive", "cosine+contrastive")


class FeatureProjector(nn.Module):
    """Student pooled features `[B, Ds]` -> teacher width `[B, Dt]`.

    `hidden=None`: Linear-BN-ReLU-Linear with hidden width `max(Ds, Dt)`; `hidden > 0`: the same with that
    width; `hidden=0`: a single Linear. The BN variant needs batches of at least 2 in training mode.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"projector dims must be positive, got {in_dim} -> {out_dim}")
        width = max(in_dim, out_dim) if hidden is None else int(hidden)
        if width < 0:
            raise ValueError(f"hidden must be >= 0 or None, got {hidden}")
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, width
        if width == 0:
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        else:
            self.net = nn.Sequential(
                nn.Linear(in_dim, width, bias=False),  # bias is redundant before BN
                nn.BatchNorm1d(width),
                nn.ReLU(inplace=True),
                nn.Linear(width, out_dim),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, Ds]` -> `[B, Dt]`."""
        return self.net(x)


def make_projector(student: nn.Module, teacher_dim: int, hidden: int | None = None) -> FeatureProjector:
    """A projector from `student.num_features` to `teacher_dim` (see `FeatureProjector` for `hidden`)."""
    return FeatureProjector(int(student.num_features), int(teacher_dim), hidden)


class FeatureDistillTask:
    """Feature matching on `{"images", "indices", "views"}` batches (from `ViewBatches`).

    `teacher_features`: `[N, V, Dt]`, the frozen teacher's pooled pre-logit features for view v of
    transfer image n (`cached_teacher_outputs(..., kind="features")`, or a tensor); the student sees exactly that view
    at its own resolution, so the teacher never runs here. `loss="cosine+contrastive"` sums both terms.
    `__call__` returns `{"loss", "similarity" (mean matched cosine, a metric), "cosine" and/or "contrastive"}`.

    Trains the student backbone and the projector. The student's classifier head is not used
    (`forward_head(..., pre_logits=True)` stops before it), so it is left out of `trainable_parameters`:
    it would get no gradient anyway, and keeping it out avoids an optimizer slot for dead weights. Its
    `requires_grad` flags are untouched so the later label finetuning trains it as usual.
    """

    def __init__(self, student: nn.Module, projector: nn.Module, teacher_features: TeacherOutputs | torch.Tensor,
                 loss: FeatureLoss = "cosine", contrastive_temperature: float = 0.1, view_seed: int = 0) -> None:
        if loss not in FEATURE_LOSSES:
            raise ValueError(f"loss must be one of {FEATURE_LOSSES}, got {loss!r}")
        if isinstance(teacher_features, torch.Tensor) and teacher_features.ndim != 3:
            raise ValueError(f"teacher_features must be [N, V, D], got {tuple(teacher_features.shape)}")
        if contrastive_temperature <= 0:
            raise ValueError(f"contrastive_temperature must be positive, got {contrastive_temperature}")
        self.student = student
        self.projector = projector
        self.teacher_features = TeacherOutputs.wrap(teacher_features)
        if self.teacher_features.is_probabilities:
            raise ValueError("feature matching needs stored features, not top-k compressed probabilities")
        self.loss = loss
        self.contrastive_temperature = contrastive_temperature
        self.view_seed = view_seed

    def _head_parameter_ids(self) -> set[int]:
        get_classifier = getattr(self.student, "get_classifier", None)
        if get_classifier is None:
            return set()
        head = get_classifier()
        return {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """Student parameters except the classifier head, then the projector's."""
        skip = self._head_parameter_ids()
        student = [p for p in self.student.parameters() if p.requires_grad and id(p) not in skip]
        return student + [p for p in self.projector.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.student.train(mode)
        self.projector.train(mode)

    def student_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized input `[B, 3, S, S]` -> projected student features `[B, Dt]`."""
        pooled = self.student.forward_head(self.student.forward_features(x), pre_logits=True)  # [B, Ds]
        return self.projector(pooled)

    def prepare(self, batch: Batch) -> Batch:
        """Host-side work, run ahead by the loop's prefetch thread (`cached_targets.prepare_cached`)."""
        return prepare_cached(batch, self.teacher_features, self.view_seed)

    def _views_and_target(self, batch: Batch, device: torch.device) -> tuple[Views, torch.Tensor]:
        return views_and_targets(batch, self.teacher_features, self.view_seed, device)

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        views, target = self._views_and_target(batch, batch["images"].device)  # target [B, Dt]
        x = model_input(batch["images"], self.student.preprocess, views)
        pred = self.student_features(x)
        parts: dict[str, torch.Tensor] = {
            "similarity": torch.cosine_similarity(pred.detach().float(), target, dim=1).mean(),
        }
        total = pred.new_zeros((), dtype=torch.float32)
        if "cosine" in self.loss:
            cos = cosine_feature_loss(pred, target)
            total = total + cos
            parts["cosine"] = cos.detach()
        if "contrastive" in self.loss:
            nce = contrastive_feature_loss(pred, target, self.contrastive_temperature)
            total = total + nce
            parts["contrastive"] = nce.detach()
        return {"loss": total, **parts}
