"""Segmentation inference and metrics from a confusion matrix: mIoU, per-class IoU, pixel accuracy.

Under a process group `evaluate_segmentation` splits the test set like `engine.evaluate.evaluate`: rank r
predicts batches r, r + W, ... of the one-process order, and the confusion counts are summed over ranks.

Pixels whose label is the ignore index count nowhere. A class that is neither in the labels nor in the
predictions (IoU 0/0) has no IoU and is left out of the mean, as in the usual benchmark code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from taskdistill import distributed
from taskdistill.data.image_rows import Images
from taskdistill.data.segmentation import SegmentationSet
from taskdistill.data.views import Views, model_input
from taskdistill.engine.evaluate import rank_rows
from taskdistill.engine.inference import BatchSize, batched_inference, resolve_batch_size
from taskdistill.models.segmentation import resize_logits


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """int64 `[K, K]` counts (rows: true class, columns: predicted) over pixels whose target is not ignored.

    `pred`, `target`: integer tensors of the same shape (e.g. `[B, H, W]`).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    t, p = target.reshape(-1).long(), pred.reshape(-1).long()
    keep = t != ignore_index
    t, p = t[keep], p[keep]
    if bool(((t < 0) | (t >= num_classes)).any()):
        bad = torch.unique(t[(t < 0) | (t >= num_classes)])[:8].tolist()
        raise ValueError(f"target has labels {bad} outside 0..{num_classes - 1} that are not the ignore index {ignore_index}")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).view(num_classes, num_classes)


def segmentation_metrics(confusion: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """mIoU, per-class IoU (None for a class absent from labels and predictions), pixel accuracy, mean
    per-class pixel accuracy (over classes present in the labels), the confusion matrix and the pixel count."""
    c = confusion.double()
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    total = float(c.sum())
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    support = c.sum(1)
    acc = tp / support.clamp(min=1)
    return {
        "miou": float(iou[present].mean()) if bool(present.any()) else 0.0,
        "per_class_iou": {name: (None if not bool(present[i]) else float(iou[i])) for i, name in enumerate(class_names)},
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "mean_accuracy": float(acc[support > 0].mean()) if bool((support > 0).any()) else 0.0,
        "confusion_matrix": confusion.tolist(),
        "num_pixels": int(total),
    }


@torch.inference_mode()
def predict_masks(model: nn.Module, images: Images, out_size: Sequence[int] | None = None,
                  batch_size: BatchSize = 128, device: torch.device | str = "cpu", desc: str = "predict",
                  progress: bool = True, precision: str = "fp32") -> torch.Tensor:
    """The predicted class of every pixel, int16 `[N, H, W]` on the CPU, for uint8 `images` `[N, C, h, w]`:
    logits resized bilinearly (`resize_logits`) to `out_size` (default: the images' own size), then argmax;
    model in eval mode, inference at `precision` through the one batched-inference loop."""
    size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
    was_training = model.training
    model.eval()

    def forward(x: torch.Tensor, v: Views | None) -> torch.Tensor:
        return resize_logits(model(model_input(x, model.preprocess, v)).float(), size).argmax(1)

    try:
        bs = resolve_batch_size(batch_size, model, forward, images, device, precision)
        return batched_inference(forward, images, bs, device, precision, desc=desc, progress=progress).to(torch.int16)
    finally:
        model.train(was_training)


def evaluate_segmentation(model: nn.Module, data: SegmentationSet, batch_size: BatchSize = 128,
                          device: torch.device | str = "cpu", desc: str = "evaluate",
                          precision: str = "fp32") -> dict[str, Any]:
    """Metrics of `model` on `data`, at the masks' resolution (logits resized bilinearly to it); under a
    process group each rank predicts its share of the batches and the confusion counts are summed."""
    k = data.num_classes
    images, masks = data.images, data.masks
    if distributed.is_distributed():
        rows = rank_rows(len(data), batch_size if isinstance(batch_size, int) else 128)
        images, masks = images[rows], masks[rows]
    confusion = torch.zeros(k, k, dtype=torch.long)
    if len(images):
        pred = predict_masks(model, images, masks.shape[-2:], batch_size, device, desc, distributed.is_main(), precision)
        confusion = confusion_matrix(pred, masks, k, data.ignore_index)
    metrics = segmentation_metrics(distributed.all_reduce_sum(confusion), data.class_names)
    metrics["num_images"] = len(data)
    return metrics
