"""How a model wants its input pixels (the data side of timm's pretrained_cfg: mean, std, input size)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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
