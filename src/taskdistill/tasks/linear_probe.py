"""Linear probing on features computed once: the backbone runs a single time per labeled image."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from taskdistill.data.image_rows import Images
from taskdistill.data.views import Views, model_input
from taskdistill.engine.batches import Batch
from taskdistill.engine.inference import batched_inference


@torch.inference_mode()
def pooled_features(model: nn.Module, images: Images, batch_size: int = 256,
                    device: torch.device | str = "cpu", precision: str = "fp32") -> torch.Tensor:
    """uint8 images `[N, C, H, W]` -> pooled pre-logit features `[N, D]` float32 on `device` (model in eval mode),
    inference at `precision`."""
    model.eval()

    def forward(x: torch.Tensor, views: Views | None) -> torch.Tensor:
        return model.forward_head(model.forward_features(model_input(x, model.preprocess)), pre_logits=True)

    return batched_inference(forward, images, batch_size, device, precision, progress=False, on_cpu=False)


class FeatureBatches:
    """Batches of `{"features": [B, D], "labels": [B], "indices": [B]}` from precomputed features."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor, epoch: int) -> Batch:
        return {"features": self.features[indices], "labels": self.labels[indices], "indices": indices}


class LinearProbeTask:
    """Cross-entropy of the model's classifier on frozen pooled features `[B, D]`."""

    def __init__(self, head: nn.Module, label_smoothing: float = 0.0) -> None:
        self.head = head
        self.label_smoothing = label_smoothing

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return list(self.head.parameters())

    def train(self, mode: bool = True) -> None:
        self.head.train(mode)

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.head(batch["features"])
        loss = F.cross_entropy(logits, batch["labels"], label_smoothing=self.label_smoothing)
        return {"loss": loss, "ce": loss.detach()}
