"""Batched inference and classification metrics."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from taskdistill.data.views import Views, model_input
from taskdistill.engine.batches import EpochSampler


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256, device: torch.device | str = "cpu",
                   views: Views | None = None, desc: str = "predict", progress: bool = True) -> torch.Tensor:
    """uint8 images `[N, C, H, W]` -> logits `[N, K]` (float32, on the CPU), model in eval mode."""
    was_training = model.training
    model.eval()
    outs = []
    sampler = EpochSampler(len(images), batch_size, shuffle=False)
    for idx in tqdm(sampler, desc=desc, unit="batch", leave=False, disable=None if (progress and len(sampler) >= 4) else True):
        batch_views = None if views is None else Views(views.boxes[idx], views.flips[idx])
        x = model_input(images[idx].to(device), model.preprocess, batch_views)
        outs.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(outs)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """Top-1 accuracy, macro (mean per-class) accuracy, per-class accuracy and the confusion matrix
    (rows: true class, columns: predicted), from logits `[N, K]` and labels `[N]`."""
    k = len(class_names)
    pred = logits.argmax(1)
    confusion = torch.bincount(labels * k + pred, minlength=k * k).view(k, k)
    support = confusion.sum(1)
    per_class = confusion.diag().float() / support.clamp(min=1).float()
    present = support > 0
    return {
        "top1": float((pred == labels).float().mean()),
        "macro_accuracy": float(per_class[present].mean()) if bool(present.any()) else 0.0,
        "per_class_accuracy": {name: float(per_class[i]) for i, name in enumerate(class_names)},
        "confusion_matrix": confusion.tolist(),
        "num_images": int(len(labels)),
    }


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, class_names: list[str],
             batch_size: int = 256, device: torch.device | str = "cpu", desc: str = "evaluate") -> dict[str, Any]:
    """Metrics of `model` on labeled images."""
    logits = predict_logits(model, images, batch_size=batch_size, device=device, desc=desc)
    return classification_metrics(logits, labels, class_names)
