"""Per-pixel losses for segmentation: cross-entropy with an ignore index, KD on softened per-pixel
outputs, and dense feature matching (the task-agnostic baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_dense(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.ndim != 4 or student.shape != teacher.shape:
        raise ValueError(f"expected student and teacher {what} of the same shape [B, C, H, W], got student "
                         f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}; resize the teacher's "
                         f"with models.segmentation.resize_logits first")


def _masked_mean(per_pixel: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of `[B, H, W]` over the pixels where `valid` `[B, H, W]` is true (0 when none is)."""
    if valid is None:
        return per_pixel.mean()
    if valid.shape != per_pixel.shape:
        raise ValueError(f"valid mask {tuple(valid.shape)} does not match the pixels {tuple(per_pixel.shape)}")
    w = valid.to(per_pixel.dtype)
    return (per_pixel * w).sum() / w.sum().clamp(min=1.0)


def seg_cross_entropy(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Mean cross-entropy over labeled pixels: logits `[B, K, H, W]`, masks `[B, H, W]` (class or `ignore_index`).

    0 (with a gradient path) when every pixel is ignored, instead of torch's NaN.
    """
    if logits.ndim != 4 or masks.shape != (logits.shape[0], *logits.shape[-2:]):
        raise ValueError(f"logits {tuple(logits.shape)} and masks {tuple(masks.shape)} do not match [B, K, H, W] / [B, H, W]")
    target = masks.long()
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)


def dense_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel KL(p_T || q_T) * T^2, averaged over the valid pixels of the batch.

    `student_logits`, `teacher_logits`: `[B, K, H, W]`; p_T, q_T: softmax over K at temperature T at each
    pixel. `valid` `[B, H, W]` (bool) leaves pixels out (e.g. ignore-index pixels); None keeps all.
    """
    _check_dense(student_logits, teacher_logits, "logits")
    t = float(temperature)
    if t <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_q = F.log_softmax(student_logits.float() / t, dim=1)
    log_p = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)  # [B, H, W]
    return _masked_mean(kl, valid) * (t * t)


def dense_cosine_loss(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over locations of `1 - cos(student[b, :, y, x], teacher[b, :, y, x])`: features `[B, D, h, w]`."""
    _check_dense(student, teacher, "features")
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=1, eps=1e-8)  # [B, h, w]
    return _masked_mean(1.0 - cos, valid)
