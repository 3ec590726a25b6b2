"""Segmentation predictions for image files: colour-coded index-mask PNGs (and optional overlays)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from taskdistill.atomic import atomic_path
from taskdistill.data.decode import DecodePolicy
from taskdistill.data.segmentation import mask_image, palette
from taskdistill.data.sources import decode_image
from taskdistill.engine.seg_metrics import predict_masks
from taskdistill.errors import DataError


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def overlay(image: Image.Image, mask: np.ndarray, num_classes: int, alpha: float = 0.5) -> Image.Image:
    """The image with each pixel blended towards its class colour (`mask` `[H, W]` at the image's size)."""
    colours = np.array(palette(num_classes), dtype=np.float32)
    rgb = np.asarray(image, dtype=np.float32)
    out = (1 - alpha) * rgb + alpha * colours[np.clip(mask, 0, num_classes - 1)]
    return Image.fromarray(np.round(out).astype(np.uint8))


def predict_mask_files(model: nn.Module, files: Sequence[str | Path], class_names: list[str], out_dir: str | Path,
                       with_overlay: bool = False, ignore_index: int = 255,
                       device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    """Segment each image file and write `<out_dir>/<stem>_mask.png` at the image's own size.

    The mask is a palette PNG: colour-coded (`data.segmentation.palette`) and its pixel values are the class
    indices, so it reads back as a mask. `with_overlay` also writes `<stem>_overlay.png`. Returns, per image,
    the paths written and each class's share of the pixels.
    """
    out_dir = Path(out_dir)
    size = model.preprocess.input_size
    k = len(class_names)
    results = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise DataError(f"image file '{path}' does not exist")
        try:
            x = decode_image(path, DecodePolicy(size, resize="squash"))  # as segmentation data is loaded
            original = _open_rgb(path)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image '{path}': {e}") from None
        w, h = original.size
        mask = predict_masks(model, x[None], (h, w), batch_size=1, device=device, progress=False)[0]
        mask = mask.numpy().astype(np.uint8)  # [h, w]
        mask_path = out_dir / f"{path.stem}_mask.png"
        with atomic_path(mask_path) as tmp:
            mask_image(mask, k, ignore_index).save(tmp, format="PNG")
        written = {"mask": str(mask_path)}
        if with_overlay:
            written["overlay"] = str(out_dir / f"{path.stem}_overlay.png")
            with atomic_path(written["overlay"]) as tmp:
                overlay(original, mask, k).save(tmp, format="PNG")
        counts = np.bincount(mask.reshape(-1), minlength=k)[:k]
        shares = {class_names[i]: float(counts[i] / mask.size) for i in np.argsort(-counts) if counts[i] > 0}
        results.append({"image": str(path), **written, "class_shares": shares})
    return results
