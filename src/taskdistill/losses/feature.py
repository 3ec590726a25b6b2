"""Feature-matching losses for task-agnostic distillation: the student's (projected) features against the
frozen teacher's pooled features of the same image and view."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_pair(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.ndim != 2 or student.shape != teacher.shape:
        raise ValueError(f"expected student and teacher features of the same shape [B, D], "
                         f"got student {tuple(student.shape)} and teacher {tuple(teacher.shape)}")


def cosine_feature_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of `1 - cos(student_i, teacher_i)`; a scalar in [0, 2].

    `student`, `teacher`: `[B, D]`. Scale-free, so the teacher's feature norm does not need matching.
    Computed in float32 whatever the input dtype.
    """
    _check_pair(student, teacher)
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=1, eps=1e-8)  # [B]
    return (1.0 - cos).mean()


def contrastive_feature_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE from student to teacher: row i of `student` must pick row i of `teacher` among all B teacher rows.

    `student`, `teacher`: `[B, D]`. Both are L2-normalised; logits `[B, B]` = `s @ t.T / temperature`, and
    the loss is the cross-entropy with targets `0..B-1`, averaged over the batch (so it is `log B` when the
    student is uninformative and tends to 0 when every row is far closer to its own teacher row).

    One-directional on purpose: the teacher features are a fixed target, so only the student side asks
    "which teacher is mine?". The mirrored term (each teacher row choosing among student rows) would only
    add a differently-normalised push of the student rows apart. Needs B >= 2 to have any negatives.
    """
    _check_pair(student, teacher)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    s = F.normalize(student.float(), dim=1)
    t = F.normalize(teacher.float(), dim=1)
    logits = s @ t.t() / temperature  # [B, B]
    targets = torch.arange(len(s), device=s.device)
    return F.cross_entropy(logits, targets)
