"""The one interface every teacher and student exposes, whatever hub it came from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: `[B, 3, input_size, input_size]`, scaled to [0, 1], then (x - mean) / std."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(mean=tuple(d["mean"]), std=tuple(d["std"]), input_size=int(d["input_size"]))


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
