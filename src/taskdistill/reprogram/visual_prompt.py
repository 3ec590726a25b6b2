"""Input-side reprogramming: learned visual prompts in front of a frozen teacher.

A prompt takes the target image rendered in [0, 1] and returns the teacher's normalised input
`[B, 3, S, S]` (S = `input_size`). Prompts are additive and live in [0, 1] pixel space, before the
teacher's `(x - mean) / std`, so one prompt tensor means the same thing for any teacher statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taskdistill.data.views import normalize
from taskdistill.models.base import Preprocess


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """`[B, 3, h, w]` -> `[B, 3, size, size]`, bilinear (antialiased when shrinking), as `views.render` does."""
    if x.shape[-2:] == (size, size):
        return x
    down = size < max(x.shape[-2:])
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=down)


def _init(shape: tuple[int, ...], init_std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(shape) * init_std if init_std > 0 else torch.zeros(shape))


class VisualPrompt(nn.Module):
    """Common part of the prompts: canvas size, the size the image is rendered at, normalisation."""

    def __init__(self, input_size: int, preprocess: Preprocess) -> None:
        super().__init__()
        if input_size <= 0:
            raise ValueError(f"input_size must be positive, got {input_size}")
        self.input_size = int(input_size)
        self.preprocess = preprocess

    @property
    def image_size(self) -> int:
        """Side of the square the target image occupies inside the canvas."""
        return self.input_size

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _finish(self, x01: torch.Tensor) -> torch.Tensor:
        """`[B, 3, S, S]` in pixel space -> the teacher's normalised input (channels-last, like the teacher)."""
        return normalize(x01, self.preprocess).contiguous(memory_format=torch.channels_last)


class PaddingPrompt(VisualPrompt):
    """The image shrunk to `inner = S - 2 * pad` in the middle of the canvas, with a learned frame around it.

    out = normalise(pad_fill(resize(x, inner)) + delta), where `delta` `[1, 3, S, S]` is zero in the
    centre `inner x inner` square and learned in the `pad`-wide border (3 * (S^2 - inner^2) parameters,
    stored as four strips so nothing is allocated for the centre). The border starts as `fill` (0 =
    black) plus the frame; `init_std = 0` starts the frame at zero.
    """

    def __init__(self, input_size: int, preprocess: Preprocess, pad: int, init_std: float = 0.0,
                 fill: float = 0.0) -> None:
        super().__init__(input_size, preprocess)
        if pad < 1 or 2 * pad >= input_size:
            raise ValueError(f"pad must be in [1, {(input_size - 1) // 2}] for input_size {input_size}, got {pad}")
        self.pad = int(pad)
        self.fill = float(fill)
        inner = self.input_size - 2 * self.pad
        self.top = _init((1, 3, self.pad, self.input_size), init_std)
        self.bottom = _init((1, 3, self.pad, self.input_size), init_std)
        self.left = _init((1, 3, inner, self.pad), init_std)
        self.right = _init((1, 3, inner, self.pad), init_std)

    @property
    def image_size(self) -> int:
        return self.input_size - 2 * self.pad

    def frame(self) -> torch.Tensor:
        """The additive frame `[1, 3, S, S]`: learned border, exact zeros in the centre."""
        inner = self.image_size
        centre = self.left.new_zeros(1, 3, inner, inner)
        middle = torch.cat([self.left, centre, self.right], dim=3)
        return torch.cat([self.top, middle, self.bottom], dim=2)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """`[B, 3, h, w]` in [0, 1] -> normalised teacher input `[B, 3, S, S]`."""
        p = self.pad
        canvas = F.pad(_resize(x01, self.image_size), (p, p, p, p), value=self.fill)
        return self._finish(canvas + self.frame().to(canvas.dtype))


class FullImagePrompt(VisualPrompt):
    """The image resized to S plus a learned full-size perturbation: normalise(resize(x, S) + delta).

    `delta` is `[1, 3, S, S]` (3 * S^2 parameters), zero at the start unless `init_std > 0`.
    """

    def __init__(self, input_size: int, preprocess: Preprocess, init_std: float = 0.0) -> None:
        super().__init__(input_size, preprocess)
        self.delta = _init((1, 3, self.input_size, self.input_size), init_std)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """`[B, 3, h, w]` in [0, 1] -> normalised teacher input `[B, 3, S, S]`."""
        x = _resize(x01, self.input_size)
        return self._finish(x + self.delta.to(x.dtype))


class NoPrompt(VisualPrompt):
    """No input transformation: normalise(resize(x, S)). No parameters; the "no prompt" ablation, where
    only the label map (if learned) adapts the frozen teacher."""

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """`[B, 3, h, w]` in [0, 1] -> normalised teacher input `[B, 3, S, S]`."""
        return self._finish(_resize(x01, self.input_size))
