"""Dense teacher outputs (per-pixel logits, or a backbone feature map) in the teacher-output cache.

The cache (`cache/teacher_outputs.py`) stores one row per (transfer image, view) and lets a teacher that
has `cache_outputs` / `cache_signature` compute its own rows. `DenseTeacher` is that adapter for a
`SegmentationModel`: a row is a `[C, h, w]` map flattened to `C*h*w` float16 values, so the cache's
memory-mapped, resumable, content-keyed storage is used unchanged. The key covers the grid and the kind.

Logits are stored at reduced resolution: the head's own output grid (input size / output stride, e.g.
32x32 for a 128 px teacher with stride 4) or `grid_size` when given (area-averaged down, or bilinear up).
A student replays them with `resize_logits` to its own output size, the same bilinear resize the teacher
uses to turn that grid into its full-resolution prediction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from taskdistill.cache.teacher_outputs import TeacherOutputs, cached_teacher_outputs
from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import Views, model_input
from taskdistill.engine.inference import BatchSize
from taskdistill.models.segmentation import resize_logits

DenseKind = Literal["dense-logits", "dense-features"]
DENSE_KINDS: tuple[str, ...] = ("dense-logits", "dense-features")


def resize_grid(x: torch.Tensor, size: int) -> torch.Tensor:
    """`[B, C, h, w]` -> `[B, C, size, size]`: area average when shrinking, `resize_logits` when growing."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    if size <= min(x.shape[-2:]):
        return F.adaptive_avg_pool2d(x, size)
    return resize_logits(x, (size, size))


class DenseTeacher(nn.Module):
    """A segmentation model seen by the cache: `[B, C*h*w]` rows of its logits or of backbone level `level`."""

    def __init__(self, model: nn.Module, kind: DenseKind, grid_size: int | None = None, level: int = -2) -> None:
        super().__init__()
        if kind not in DENSE_KINDS:
            raise ValueError(f"dense output kind must be one of {DENSE_KINDS}, got {kind!r}")
        if grid_size is not None and grid_size < 1:
            raise ValueError(f"grid_size must be >= 1 or None, got {grid_size}")
        self.model = model
        self.kind, self.grid_size, self.level = kind, grid_size, level
        self.spec = model.spec
        self.preprocess = model.preprocess
        self._grid: tuple[int, int, int] | None = None

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized input `[B, 3, S, S]` -> `[B, C, h, w]` (logits, or the backbone level's features)."""
        if self.kind == "dense-logits":
            out = self.model.forward_head(self.model.forward_features(x))
        else:
            out = self.model.dense_features(x, self.level)
        return out if self.grid_size is None else resize_grid(out, self.grid_size)

    @property
    def grid(self) -> tuple[int, int, int]:
        """`(C, h, w)` of one stored map (measured once on a blank input)."""
        if self._grid is None:
            size = self.preprocess.input_size
            ref = next(self.model.parameters())
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad():
                out = self.maps(torch.zeros(1, 3, size, size, device=ref.device, dtype=ref.dtype))
            self.model.train(was_training)
            self._grid = (int(out.shape[1]), int(out.shape[2]), int(out.shape[3]))
        return self._grid

    def cache_signature(self) -> dict[str, Any]:
        return {"preprocess": self.preprocess.to_dict(), "dense": self.kind, "grid": list(self.grid),
                "level": self.level if self.kind == "dense-features" else None}

    def cache_outputs(self, images: torch.Tensor, views: Views, kind: str) -> torch.Tensor:
        """uint8 `[B, C, H, W]` seen as `views` -> `[B, C*h*w]`."""
        if kind != self.kind:
            raise ValueError(f"this DenseTeacher stores {self.kind!r}, asked for {kind!r}")
        return self.maps(model_input(images, self.preprocess, views)).flatten(1)


class DenseOutputs:
    """Stored dense outputs: `gather(indices, views)` -> float32 `[B, C, h, w]`."""

    def __init__(self, outputs: TeacherOutputs, grid: tuple[int, int, int]) -> None:
        c, h, w = grid
        if outputs.num_outputs != c * h * w:
            raise ValueError(f"stored rows have {outputs.num_outputs} values, grid {grid} needs {c * h * w}")
        if outputs.is_probabilities:
            raise ValueError("dense outputs must be stored in full (float16), not as top-k probabilities")
        self.outputs, self.grid = outputs, (c, h, w)

    @classmethod
    def wrap(cls, x: DenseOutputs | torch.Tensor) -> DenseOutputs:
        """Accept an in-memory `[N, V, C, h, w]` tensor where stored outputs are expected."""
        if isinstance(x, DenseOutputs):
            return x
        if x.ndim != 5:
            raise ValueError(f"dense teacher outputs must be [N, V, C, h, w], got {tuple(x.shape)}")
        n, v, c, h, w = x.shape
        return cls(TeacherOutputs.wrap(x.reshape(n, v, c * h * w)), (c, h, w))

    def __len__(self) -> int:
        return len(self.outputs)

    @property
    def num_views(self) -> int:
        return self.outputs.shape[1]

    def gather(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return self.outputs.gather(indices, views).view(len(indices), *self.grid)


def cached_dense_outputs(model: nn.Module, transfer: ImageSet, num_views: int, view_seed: int,
                         cache_dir: str | Path, batch_size: BatchSize = 128, device: torch.device | str = "cpu",
                         kind: DenseKind = "dense-logits", grid_size: int | None = None,
                         level: int = -2, precision: str = "fp32") -> tuple[DenseOutputs, dict[str, Any]]:
    """The teacher's dense outputs for every view of every transfer image, from the cache or computed, the
    teacher running at `precision` (see `cached_teacher_outputs`).

    Returns them and the cache's info dict (`key`, `hit`, `seconds`, `teacher_images`, `bytes_per_view`,
    `path`) plus `grid`.
    """
    teacher = DenseTeacher(model, kind, grid_size, level)
    outputs, info = cached_teacher_outputs(teacher, transfer, num_views, view_seed, cache_dir, batch_size, device,
                                           kind=kind, precision=precision)
    return DenseOutputs(outputs, teacher.grid), {**info, "grid": list(teacher.grid)}
