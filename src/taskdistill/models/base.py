"""The one interface every teacher and student exposes, whatever hub it came from."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from taskdistill.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocess", "TaskModel"]


@runtime_checkable
class TaskModel(Protocol):
    """timm's classifier interface, which every model here follows.

    - `forward_features(x)`: `[B, 3, H, W]` -> backbone features (any shape).
    - `forward_head(feats, pre_logits=False)`: features -> logits `[B, K]`, or pooled features
      `[B, num_features]` when `pre_logits=True`.
    - `reset_classifier(num_classes)`: a fresh linear head for `num_classes` (0 removes it).
    - `get_classifier()`: the head module (for linear probing).
    - `num_features`: width of the pooled features.
    - `preprocess`: a `Preprocess`.
    """

    num_features: int
    preprocess: Preprocess

    def forward_features(self, x: torch.Tensor) -> Any: ...

    def forward_head(self, x: Any, pre_logits: bool = False) -> torch.Tensor: ...

    def reset_classifier(self, num_classes: int) -> None: ...

    def get_classifier(self) -> nn.Module: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...
