"""The input pipeline as a module, for exports that take raw images: uint8 `[B, H, W, C]` -> model logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taskdistill.models.base import Preprocess


class WithInputPipeline(nn.Module):
    """uint8 images `[B, H, W, C]` (C = 1 or 3, any H, W) -> `model`'s output.

    Inside: scale to [0, 1], grey to RGB, resize to the model's input with antialiased bilinear
    interpolation (stretching a non-square image: centre-crop it first, as the checkpoint's `crop`
    decode policy does), normalise with the model's mean and std. For square images at the checkpoint's
    decode size this is exactly what training did after decoding (`taskdistill.data.views.model_input`).
    """

    def __init__(self, model: nn.Module, preprocess: Preprocess, channels: int) -> None:
        super().__init__()
        self.model, self.size, self.channels = model, int(preprocess.input_size), int(channels)
        self.register_buffer("mean", torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        if self.channels == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return self.model((x - self.mean) / self.std)
