"""Decode one image file to uint8 pixels at a fixed size, by a recorded policy (no torch: decode workers import this).

The policy is what an image store is keyed by and what a checkpoint records, so `evaluate`, `predict` and
`export` see a new image exactly as training saw its images:

- `resize="crop"` (default) is timm's evaluation transform: the short side is scaled to `size / crop_pct`
  and the centre `size x size` is kept. With `crop_pct=1.0` a square image gives the same pixels as `squash`.
- `resize="squash"` stretches the whole image to `size x size` (aspect ratio not kept).
- `color`: "rgb" (3 channels) or "gray" (1 channel). Transparent pixels are composited on white.
- 16-bit images (PNG `I;16`, `I`) are scaled to 8 bits, not clipped; float images (`F`) in [0, 1] are scaled.
- EXIF orientation is applied (a photo taken sideways is stored upright); palette and CMYK become RGB.
- `jpeg_draft`: JPEGs much larger than needed are decoded at 1/2, 1/4 or 1/8 scale by libjpeg (DCT scaling),
  never below the size the resize needs.
"""

from __future__ import annotations

import math
import struct
from dataclasses import asdict, dataclass
from typing import IO, Any, Literal

import numpy as np
from PIL import Image, ImageOps

Resize = Literal["crop", "squash"]
Interpolation = Literal["bicubic", "bilinear", "lanczos", "nearest", "box", "hamming"]
ColorMode = Literal["rgb", "gray"]

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}
# Bumped whenever the same file and policy would give other pixels (part of every image store's key).
DECODER_VERSION = 2
# What a bad file raises while it is opened or decoded (the caller decides: fail naming it, or skip it).
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError, struct.error,
                                                 Image.DecompressionBombError)


@dataclass(frozen=True)
class DecodePolicy:
    """How a file becomes uint8 `[C, size, size]` pixels (C = 3 for rgb, 1 for gray)."""

    size: int
    resize: Resize = "crop"
    crop_pct: float = 1.0
    interpolation: Interpolation = "bicubic"
    color: ColorMode = "rgb"
    jpeg_draft: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.size, int) or self.size < 1:
            problems.append(f"size must be a positive integer, got {self.size!r}")
        if self.resize not in ("crop", "squash"):
            problems.append(f"resize must be 'crop' or 'squash', got {self.resize!r}")
        if not 0.0 < float(self.crop_pct) <= 1.0:
            problems.append(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if self.interpolation not in _RESAMPLE:
            problems.append(f"interpolation must be one of {sorted(_RESAMPLE)}, got {self.interpolation!r}")
        if self.color not in ("rgb", "gray"):
            problems.append(f"color must be 'rgb' or 'gray', got {self.color!r}")
        if problems:
            raise ValueError("bad decode policy: " + "; ".join(problems))

    @property
    def channels(self) -> int:
        return 3 if self.color == "rgb" else 1

    @property
    def row_shape(self) -> tuple[int, int, int]:
        """`(C, size, size)` of one decoded image."""
        return (self.channels, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def legacy(cls, size: int) -> DecodePolicy:
        """How checkpoints written before decode policies were recorded saw their files: stretched, full decode."""
        return cls(int(size), resize="squash", jpeg_draft=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecodePolicy:
        return cls(size=int(d["size"]), resize=d.get("resize", "squash"), crop_pct=float(d.get("crop_pct", 1.0)),
                   interpolation=d.get("interpolation", "bicubic"), color=d.get("color", "rgb"),
                   jpeg_draft=bool(d.get("jpeg_draft", False)))


def _source_box(width: int, height: int, policy: DecodePolicy) -> tuple[float, float, float, float]:
    """The region of a `width x height` image that becomes the output square (PIL box: x0, y0, x1, y1)."""
    if policy.resize == "squash":
        return (0.0, 0.0, float(width), float(height))
    side = min(width, height) * float(policy.crop_pct)
    x0, y0 = (width - side) / 2.0, (height - side) / 2.0
    return (x0, y0, x0 + side, y0 + side)


def _draft(im: Image.Image, policy: DecodePolicy) -> None:
    """Let libjpeg decode at a reduced scale that still leaves at least `size` pixels across the kept region."""
    if im.format != "JPEG":
        return
    x0, y0, x1, y1 = _source_box(*im.size, policy)
    sx, sy = policy.size / max(x1 - x0, 1e-9), policy.size / max(y1 - y0, 1e-9)
    want = (max(1, math.ceil(im.size[0] * sx)), max(1, math.ceil(im.size[1] * sy)))
    im.draft("L" if policy.color == "gray" else None, want)


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer images -> 8-bit grayscale, scaled (65535 -> 255), not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im).astype(np.float64)
        arr = np.clip(np.rint(arr * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L")
    if im.mode == "F":
        arr = np.asarray(im).astype(np.float64)
        scale = 255.0 if float(arr.max(initial=0.0)) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), mode="L")
    return im


def decode_array(source: str | IO[bytes], policy: DecodePolicy) -> np.ndarray:
    """Decode an image file (a path or a binary file object) to uint8 `[C, size, size]` by `policy`.

    Raises one of `DECODE_ERRORS` for a file that is not a readable image.
    """
    with Image.open(source) as im:
        if policy.jpeg_draft:
            _draft(im, policy)
        im.load()
        im = ImageOps.exif_transpose(im) or im  # draft works on the stored orientation; crop after turning
        im = _to_8bit(im)
        if im.mode in ("RGBA", "LA", "P", "PA") or (im.mode in ("RGB", "L") and "transparency" in im.info):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, rgba)
        im = im.convert("RGB" if policy.color == "rgb" else "L")
        box = _source_box(*im.size, policy)
        out = im.resize((policy.size, policy.size), _RESAMPLE[policy.interpolation], box=box)
        arr = np.asarray(out)
    if arr.ndim == 2:
        return arr[None].copy()
    return np.ascontiguousarray(arr.transpose(2, 0, 1))
