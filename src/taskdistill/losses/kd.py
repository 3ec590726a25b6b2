"""Knowledge-distillation losses on softened outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_T || q_T) * T^2, averaged over the batch (and pixels).

    `student_logits`, `teacher_logits`: `[B, K]` or `[B, K, H, W]` (classes on dim 1). p_T and q_T are the
    teacher's and student's softmax at temperature T; the T^2 factor keeps gradient size independent of T.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} differ")
    t = float(temperature)
    log_q = F.log_softmax(student_logits.float() / t, dim=1)
    log_p = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)  # [B] or [B, H, W]
    return kl.mean() * (t * t)


def kd_kl_loss_from_probs(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p || q_T) * T^2 with the teacher given as probabilities `p` already softened at T.

    Used with top-k compressed soft labels (`taskdistill.cache.soft_labels`). Equal to `kd_kl_loss` when
    `p = softmax(teacher_logits / T)`. Shapes as in `kd_kl_loss`; zero-probability classes add nothing.
    """
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_probs.shape)} differ")
    t = float(temperature)
    log_q = F.log_softmax(student_logits.float() / t, dim=1)
    p = teacher_probs.float()
    kl = (torch.xlogy(p, p) - p * log_q).sum(dim=1)
    return kl.mean() * (t * t)
