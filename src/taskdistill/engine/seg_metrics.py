"""Segmentation inference and metrics from a confusion matrix: mIoU, per-class IoU, pixel accuracy.

Under a process group `evaluate_segmentation` splits the test set like `engine.evaluate.evaluate`: rank r
predicts batches r, r + W, ... of the one-process order, and the confusion counts are summed over ranks.

Pixels whose label is the ignore index count nowhere. A class that is neither in the labels nor in the
predictions (IoU 0/0) has no IoU and is left out of the mean, as in the usual benchmark code.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from taskdistill import distributed
from taskdistill.data.segmentation import SegmentationSet
from taskdistill.data.views import model_input
from taskdistill.engine.batches import EpochSampler
from taskdistill.engine.evaluate import rank_rows
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
def iter_seg_logits(model: nn.Module, images: torch.Tensor, out_size: Sequence[int] | None = None,
                    batch_size: int = 128, device: torch.device | str = "cpu", desc: str = "predict",
                    progress: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield `(indices [b], logits [b, K, H, W])` (float32, CPU) for uint8 `images` `[N, C, h, w]`, model in eval mode.

    Logits are resized with `resize_logits` to `out_size` (default: the images' own size).
    """
    size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
    was_training = model.training
    model.eval()
    sampler = EpochSampler(len(images), batch_size, shuffle=False)
    try:
        for idx in tqdm(sampler, desc=desc, unit="batch", leave=False,
                        disable=None if (progress and len(sampler) >= 4) else True):
            x = model_input(images[idx].to(device), model.preprocess)
            yield idx, resize_logits(model(x).float(), size).cpu()
    finally:
        model.train(was_training)


def evaluate_segmentation(model: nn.Module, data: SegmentationSet, batch_size: int = 128,
                          device: torch.device | str = "cpu", desc: str = "evaluate") -> dict[str, Any]:
    """Metrics of `model` on `data`, at the masks' resolution (logits resized bilinearly to it)."""
    k = data.num_classes
    confusion = torch.zeros(k, k, dtype=torch.long)
    images, masks = data.images, data.masks
    if distributed.is_distributed():
        rows = rank_rows(len(data), batch_size)
        images, masks = images[rows], masks[rows]
    if len(images):
        for idx, logits in iter_seg_logits(model, images, masks.shape[-2:], batch_size, device, desc,
                                           progress=distributed.is_main()):
            confusion += confusion_matrix(logits.argmax(1), masks[idx], k, data.ignore_index)
    metrics = segmentation_metrics(distributed.all_reduce_sum(confusion), data.class_names)
    metrics["num_images"] = len(data)
    return metrics
