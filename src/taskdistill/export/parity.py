"""Does an exported model compute what the PyTorch model computes? Compared on real images, batch by batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from taskdistill.data.image_rows import Images
from taskdistill.data.views import model_input
from taskdistill.engine.batches import EpochSampler

MAX_ABS_DIFF = 1e-4  # logits: float32 graphs of the same weights agree to rounding


@dataclass(frozen=True)
class Parity:
    """Exported vs PyTorch outputs on `images` images: largest absolute difference of any output, and the
    share of images (of pixels, for segmentation) whose top-1 class agrees; accuracies when labels were given."""

    images: int
    max_abs_diff: float
    top1_agreement: float
    reference_top1: float | None = None
    exported_top1: float | None = None

    def ok(self, tolerance: float = MAX_ABS_DIFF) -> bool:
        return self.max_abs_diff <= tolerance and self.top1_agreement == 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def exported_input(images: torch.Tensor, model: nn.Module, uint8_input: bool) -> np.ndarray:
    """What the exported graph takes for uint8 `[B, C, H, W]` images: uint8 `[B, H, W, C]`, or the model's
    normalised float input `[B, 3, S, S]`."""
    if uint8_input:
        return images.permute(0, 2, 3, 1).contiguous().numpy()
    return model_input(images, model.preprocess).contiguous().numpy()


@torch.inference_mode()
def compare(model: nn.Module, run: Callable[[np.ndarray], np.ndarray], images: Images, uint8_input: bool,
            labels: torch.Tensor | None = None, batch_size: int = 64) -> Parity:
    """Run `model` (PyTorch, eval) and `run` (the export) on every image; outputs `[B, K]` or `[B, K, H, W]`."""
    model.eval()
    worst, agree, total, hits_ref, hits_exp = 0.0, 0, 0, 0, 0
    for idx in EpochSampler(len(images), batch_size, shuffle=False):
        batch = images[idx]
        ref = model(model_input(batch, model.preprocess)).float().numpy()
        got = np.asarray(run(exported_input(batch, model, uint8_input)), dtype=np.float32)
        if got.shape != ref.shape:
            raise ValueError(f"exported output shape {got.shape} differs from PyTorch's {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
        a, b = ref.argmax(1), got.argmax(1)
        agree += int((a == b).sum())
        total += a.size
        if labels is not None and ref.ndim == 2:
            y = labels[idx].numpy()
            hits_ref += int((a == y).sum())
            hits_exp += int((b == y).sum())
    with_labels = labels is not None and total == len(images)  # classification: one prediction per image
    return Parity(images=len(images), max_abs_diff=worst, top1_agreement=agree / max(total, 1),
                  reference_top1=hits_ref / len(images) if with_labels else None,
                  exported_top1=hits_exp / len(images) if with_labels else None)
