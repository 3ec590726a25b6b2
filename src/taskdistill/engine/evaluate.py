"""Batched inference and classification metrics.

Under a process group `evaluate` splits the work: rank r predicts every W-th batch (the same batches one
process would run, so the same logits), the per-rank confusion counts are summed over ranks, and every
rank returns the metrics of the whole set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from taskdistill import distributed
from taskdistill.data.image_rows import Images, take
from taskdistill.data.views import Views, model_input
from taskdistill.engine.batches import EpochSampler
from taskdistill.engine.inference import AUTO_START, BatchSize, batched_inference, resolve_batch_size


@torch.inference_mode()
def predict_logits(model: nn.Module, images: Images, batch_size: BatchSize = 256, device: torch.device | str = "cpu",
                   views: Views | None = None, desc: str = "predict", progress: bool = True,
                   precision: str = "fp32") -> torch.Tensor:
    """uint8 images `[N, C, H, W]` -> logits `[N, K]` (float32, on the CPU), model in eval mode, at `precision`
    (`engine.precision`; fp32: no autocast). `batch_size="auto"`: see `engine.inference`."""
    was_training = model.training
    model.eval()

    def forward(x: torch.Tensor, v: Views | None) -> torch.Tensor:
        return model(model_input(x, model.preprocess, v))

    try:
        size = resolve_batch_size(batch_size, model, forward, images, device, precision)
        return batched_inference(forward, images, size, device, precision, views, desc=desc, progress=progress)
    finally:
        model.train(was_training)


def confusion_counts(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 `[K, K]` counts (rows: true class, columns: predicted) from logits `[N, K]` and labels `[N]`."""
    k = num_classes
    return torch.bincount(labels * k + logits.argmax(1), minlength=k * k).view(k, k)


def metrics_from_confusion(confusion: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """Top-1 accuracy, macro (mean per-class) accuracy, per-class accuracy and the confusion matrix."""
    support = confusion.sum(1)
    per_class = confusion.diag().float() / support.clamp(min=1).float()
    present = support > 0
    total = int(confusion.sum())
    return {
        "top1": float(confusion.diag().sum().float() / total) if total else 0.0,  # float32, as a mean of hits
        "macro_accuracy": float(per_class[present].mean()) if bool(present.any()) else 0.0,
        "per_class_accuracy": {name: float(per_class[i]) for i, name in enumerate(class_names)},
        "confusion_matrix": confusion.tolist(),
        "num_images": total,
    }


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """Top-1 accuracy, macro (mean per-class) accuracy, per-class accuracy and the confusion matrix
    (rows: true class, columns: predicted), from logits `[N, K]` and labels `[N]`."""
    return metrics_from_confusion(confusion_counts(logits, labels, len(class_names)), class_names)


def rank_rows(n: int, batch_size: int) -> torch.Tensor:
    """Indices of the evaluation batches this rank runs: batches r, r + W, ... of the one-process order."""
    info = distributed.info()
    batches = list(EpochSampler(n, batch_size, shuffle=False))[info.rank :: info.world_size]
    return torch.cat(batches) if batches else torch.empty(0, dtype=torch.long)


def evaluate(model: nn.Module, images: Images, labels: torch.Tensor, class_names: list[str],
             batch_size: BatchSize = 256, device: torch.device | str = "cpu", desc: str = "evaluate",
             precision: str = "fp32") -> dict[str, Any]:
    """Metrics of `model` on labeled images `[N, C, H, W]` (split over ranks under a process group), inference
    at `precision`."""
    k = len(class_names)
    if not distributed.is_distributed():
        logits = predict_logits(model, images, batch_size=batch_size, device=device, desc=desc, precision=precision)
        return classification_metrics(logits, labels, class_names)
    rows = rank_rows(len(images), batch_size if isinstance(batch_size, int) else AUTO_START)
    confusion = torch.zeros(k, k, dtype=torch.long)
    if len(rows):
        logits = predict_logits(model, take(images, rows), batch_size=batch_size, device=device, desc=desc,
                                progress=distributed.is_main(), precision=precision)
        confusion += confusion_counts(logits, labels[rows], k)
    return metrics_from_confusion(distributed.all_reduce_sum(confusion), class_names)
