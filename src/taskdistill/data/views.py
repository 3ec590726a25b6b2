"""Views of a batch: crop boxes and flips, drawn at random or replayed deterministically per (image, view).

A view is `(box, flip)`: `box = (x0, y0, x1, y1)` in [0, 1] image coordinates. The same view rendered at
the teacher's and at the student's resolution shows the same content, which is what lets the teacher's
outputs be cached once and replayed to the student.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from taskdistill.data.preprocess import Preprocess

CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class Views:
    """Per-image crop boxes `[B, 4]` (x0, y0, x1, y1 in [0, 1]) and horizontal flips `[B]` (bool)."""

    boxes: torch.Tensor
    flips: torch.Tensor

    @classmethod
    def plain(cls, n: int) -> Views:
        return cls(torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(n, 4).clone(), torch.zeros(n, dtype=torch.bool))

    @property
    def is_full_frame(self) -> bool:
        return bool((self.boxes == torch.tensor([0.0, 0.0, 1.0, 1.0])).all())


def _crop_box(rng: np.random.Generator, scale: tuple[float, float], ratio: tuple[float, float]) -> list[float]:
    """A random-resized-crop box of area share in `scale` and aspect ratio in `ratio`, inside the image."""
    area = rng.uniform(*scale)
    log_r = rng.uniform(math.log(ratio[0]), math.log(ratio[1]))
    aspect = math.exp(log_r)
    w = min(1.0, math.sqrt(area * aspect))
    h = min(1.0, math.sqrt(area / aspect))
    x0 = rng.uniform(0.0, 1.0 - w)
    y0 = rng.uniform(0.0, 1.0 - h)
    return [x0, y0, x0 + w, y0 + h]


def random_views(n: int, rng: np.random.Generator, crop: bool, flip: bool) -> Views:
    """Training augmentation: random-resized crops and/or random flips for `n` images."""
    boxes = [_crop_box(rng, CROP_SCALE, CROP_RATIO) if crop else [0.0, 0.0, 1.0, 1.0] for _ in range(n)]
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    return Views(torch.tensor(boxes, dtype=torch.float32), torch.from_numpy(flips))


def replay_views(indices: torch.Tensor, view_ids: torch.Tensor, seed: int) -> Views:
    """Deterministic views: view 0 is the plain image, view 1 its mirror, view v >= 2 a crop (+ flip) drawn
    from a generator seeded by `(seed, index, v)`. Same inputs, same views, on any machine or rank."""
    boxes, flips = [], []
    for i, v in zip(indices.tolist(), view_ids.tolist(), strict=True):
        if v == 0:
            boxes.append([0.0, 0.0, 1.0, 1.0])
            flips.append(False)
        elif v == 1:
            boxes.append([0.0, 0.0, 1.0, 1.0])
            flips.append(True)
        else:
            rng = np.random.default_rng([seed, i, v])
            boxes.append(_crop_box(rng, CROP_SCALE, CROP_RATIO))
            flips.append(bool(rng.random() < 0.5))
    return Views(torch.tensor(boxes, dtype=torch.float32), torch.tensor(flips, dtype=torch.bool))


def render(images: torch.Tensor, size: int, views: Views | None = None) -> torch.Tensor:
    """uint8 `[B, C, H, W]` (C = 1 or 3) -> float `[B, 3, size, size]` in [0, 1], cropped and flipped per view."""
    x = images.float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if views is None or views.is_full_frame:
        if x.shape[-2:] != (size, size):
            down = size < max(x.shape[-2:])
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=down)
        else:
            x = x.contiguous()
        if views is not None and bool(views.flips.any()):
            x = torch.where(views.flips.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
        return x
    b = views.boxes.to(x.device)
    cx = (b[:, 0] + b[:, 2]) - 1.0  # box centre in [-1, 1] coordinates
    cy = (b[:, 1] + b[:, 3]) - 1.0
    sx = (b[:, 2] - b[:, 0])
    sy = (b[:, 3] - b[:, 1])
    sign = torch.where(views.flips.to(x.device), -1.0, 1.0)
    theta = torch.zeros(len(b), 2, 3, device=x.device)
    theta[:, 0, 0] = sx * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [len(b), 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@functools.lru_cache(maxsize=64)
def _stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
           dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std as `[1, 3, 1, 1]` tensors on `device`, made once (no host-to-device copy per batch);
    normal tensors even when first asked for under inference mode, so training can save them for backward."""
    with torch.inference_mode(False):
        return (torch.tensor(mean, device=device, dtype=dtype).view(1, 3, 1, 1),
                torch.tensor(std, device=device, dtype=dtype).view(1, 3, 1, 1))


def normalize(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """`[B, 3, H, W]` in [0, 1] -> (x - mean) / std with the model's statistics."""
    mean, std = _stats(tuple(pre.mean), tuple(pre.std), x.device, x.dtype)
    return (x - mean) / std


def model_input(images: torch.Tensor, pre: Preprocess, views: Views | None = None) -> torch.Tensor:
    """uint8 `[B, C, H, W]` -> the model's normalized input `[B, 3, S, S]` (S = pre.input_size)."""
    return normalize(render(images, pre.input_size, views), pre).contiguous(memory_format=torch.channels_last)
