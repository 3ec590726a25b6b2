"""Masks seen through the same views (crop box + flip) as their images, with nearest-neighbour sampling.

`render_masks(masks, size, views)` is the label counterpart of `data.views.render`: the same affine grid
(pixel centres, `align_corners=False`), so a mask pixel lands where its image pixel does; class indices are
sampled, never blended.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from taskdistill.data.views import Views


def render_masks(masks: torch.Tensor, size: int, views: Views | None = None) -> torch.Tensor:
    """uint8 `[B, H, W]` -> uint8 `[B, size, size]`, cropped and flipped per view like the images."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be [B, H, W], got {tuple(masks.shape)}")
    x = masks[:, None].float()
    if views is None or views.is_full_frame:
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="nearest-exact")
        if views is not None and bool(views.flips.any()):
            x = torch.where(views.flips.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
        return x[:, 0].round().to(torch.uint8)
    b = views.boxes.to(x.device)
    sign = torch.where(views.flips.to(x.device), -1.0, 1.0)
    theta = torch.zeros(len(b), 2, 3, device=x.device)
    theta[:, 0, 0] = (b[:, 2] - b[:, 0]) * sign
    theta[:, 0, 2] = (b[:, 0] + b[:, 2]) - 1.0
    theta[:, 1, 1] = b[:, 3] - b[:, 1]
    theta[:, 1, 2] = (b[:, 1] + b[:, 3]) - 1.0
    grid = F.affine_grid(theta, [len(b), 1, size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)
    return out[:, 0].round().to(torch.uint8)
