"""The built-in segmentation task `fashion-composite`: Fashion-MNIST items pasted on textured canvases.

Each canvas (`canvas_size` px, RGB) gets a random background texture (oriented stripes, a checkerboard,
smooth colour blobs or coloured noise, plus pixel noise) and `min_items..max_items` Fashion-MNIST items,
each resized to a random side in `item_scale` of the canvas, tinted with a random colour (shaded by the
item's own grey levels) and pasted at a random position; later items occlude earlier ones. An item pixel
is foreground where its resized grey level is at least `FOREGROUND_LEVEL`; there it is drawn in the item's
colour and labeled with the item's class, everywhere else the texture shows and the label is background
(index 0), so every label agrees with what is visible. Colours and textures are drawn independently of the
class: only shape tells the classes apart.

Classes: `groups` (default) = background, top (t-shirt/top, pullover, coat, shirt), trouser, dress, footwear
(sandal, sneaker, ankle boot), bag (6); `garments` = background + the 10 Fashion-MNIST classes (11).

Reproducible: the training canvases are drawn from Fashion-MNIST's training items with a generator seeded
by `(seed, 0)`, the test canvases from its test items with `(seed, 1)`, so no item is in both splits and
the same `seed` always gives the same pixels. Nothing is downloaded: the IDX files are read where
`load_fashion_mnist` finds them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from taskdistill.atomic import write_json
from taskdistill.data.segmentation import IGNORE_INDEX, SegmentationSet, SegTaskData
from taskdistill.data.sources import FASHION_MNIST_CLASSES, load_fashion_mnist
from taskdistill.errors import DataError

CACHE_FORMAT = "fashion-composite/1"

FOREGROUND_LEVEL = 40  # grey level (of 255) from which a resized item pixel is the item, not background
ClassSet = Literal["garments", "groups"]
GROUPS: dict[str, tuple[int, ...]] = {
    "top": (0, 2, 4, 6), "trouser": (1,), "dress": (3,), "footwear": (5, 7, 9), "bag": (8,),
}
TEXTURES = ("stripes", "checker", "blobs", "noise")


@dataclass(frozen=True)
class CompositeSpec:
    """What the generator draws; see the module docstring."""

    train_images: int = 6000
    test_images: int = 1000
    canvas_size: int = 64
    min_items: int = 1
    max_items: int = 3
    min_scale: float = 0.4
    max_scale: float = 0.65
    classes: ClassSet = "groups"
    seed: int = 0

    def check(self) -> None:
        if self.train_images < 1 or self.test_images < 1:
            raise DataError(f"composite needs at least one training and one test canvas, got "
                            f"train_images={self.train_images}, test_images={self.test_images}")
        if self.canvas_size < 16:
            raise DataError(f"composite canvas_size must be >= 16 px, got {self.canvas_size}")
        if not 1 <= self.min_items <= self.max_items:
            raise DataError(f"composite items: need 1 <= min_items <= max_items, got {self.min_items}, {self.max_items}")
        if not 0.1 <= self.min_scale <= self.max_scale <= 1.0:
            raise DataError(f"composite item scale: need 0.1 <= min_scale <= max_scale <= 1, "
                            f"got {self.min_scale}, {self.max_scale}")
        if self.classes not in ("garments", "groups"):
            raise DataError(f"composite classes must be 'garments' or 'groups', got {self.classes!r}")


def class_names(classes: ClassSet) -> list[str]:
    """Background first, then the item classes."""
    return ["background", *(FASHION_MNIST_CLASSES if classes == "garments" else GROUPS)]


def label_map(classes: ClassSet) -> np.ndarray:
    """Fashion-MNIST class `c` -> its mask index `label_map[c]` (background is 0)."""
    if classes == "garments":
        return np.arange(1, 11, dtype=np.uint8)
    out = np.zeros(10, dtype=np.uint8)
    for g, members in enumerate(GROUPS.values(), start=1):
        out[list(members)] = g
    return out


# ---- drawing ------------------------------------------------------------------------------------
def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, 3).astype(np.float32)


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    return yy, xx


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random background `[size, size, 3]` float32 in [0, 1]."""
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    yy, xx = _grid(size)
    c1, c2 = _colour(rng), _colour(rng)
    if kind == "stripes":
        theta, freq, phase = rng.uniform(0, math.pi), rng.uniform(2, 10), rng.uniform(0, 2 * math.pi)
        w = 0.5 + 0.5 * np.sin(np.float32(2 * math.pi * freq) * (xx * np.float32(math.cos(theta))
                                                                 + yy * np.float32(math.sin(theta))) + np.float32(phase))
    elif kind == "checker":
        cell = np.float32(rng.uniform(0.06, 0.25))
        w = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
    elif kind == "blobs":
        grid = int(rng.integers(3, 9))
        low = rng.uniform(0, 1, (grid, grid)).astype(np.float32)
        w = np.clip(np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC)), 0.0, 1.0)
    else:
        w = rng.random((size, size), dtype=np.float32)
    img = c1 + (c2 - c1) * w[..., None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 0.06))
    return np.clip(img, 0.0, 1.0, out=img)


def _paste(canvas: np.ndarray, mask: np.ndarray, item: np.ndarray, label: int, rng: np.random.Generator,
           spec: CompositeSpec) -> None:
    """Resize a grey `[28, 28]` item, tint it and paste it (and its label) in place."""
    s = spec.canvas_size
    side = rng.uniform(spec.min_scale, spec.max_scale) * s
    aspect = math.exp(rng.uniform(math.log(0.85), math.log(1.18)))
    h = max(4, min(s, round(side * math.sqrt(aspect))))
    w = max(4, min(s, round(side / math.sqrt(aspect))))
    grey = np.asarray(Image.fromarray(item).resize((w, h), Image.Resampling.BILINEAR))
    if rng.random() < 0.5:
        grey = grey[:, ::-1]
    y0, x0 = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
    ys, xs = np.nonzero(grey >= FOREGROUND_LEVEL)
    shade = np.float32(0.45) + grey[ys, xs, None].astype(np.float32) * np.float32(0.55 / 255.0)
    canvas[y0 + ys, x0 + xs] = _colour(rng) * shade
    mask[y0 + ys, x0 + xs] = label


def draw_canvases(items: np.ndarray, item_labels: np.ndarray, count: int, spec: CompositeSpec,
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` canvases from grey items `[M, 28, 28]` uint8 with Fashion-MNIST labels `[M]`.

    Returns images uint8 `[count, 3, S, S]` and masks uint8 `[count, S, S]`.
    """
    s = spec.canvas_size
    mapping = label_map(spec.classes)
    images = np.empty((count, s, s, 3), dtype=np.uint8)
    masks = np.zeros((count, s, s), dtype=np.uint8)
    for i in range(count):
        canvas = texture(rng, s)
        for _ in range(int(rng.integers(spec.min_items, spec.max_items + 1))):
            j = int(rng.integers(len(items)))
            _paste(canvas, masks[i], items[j], int(mapping[item_labels[j]]), rng, spec)
        images[i] = np.round(canvas * 255.0).astype(np.uint8)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(masks)


def _cache_key(spec: CompositeSpec, root: str | None) -> str:
    from taskdistill.data.sources import FASHION_MNIST_ROOT

    base = Path(root or FASHION_MNIST_ROOT)
    sources = sorted((p.name, p.stat().st_size) for p in base.rglob("*-ubyte*") if p.is_file()) if base.is_dir() else []
    text = json.dumps({"format": CACHE_FORMAT, "spec": asdict(spec), "sources": sources}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_cached(folder: Path, names: list[str]) -> SegTaskData | None:
    if not (folder / "done.json").is_file():
        return None
    meta = json.loads((folder / "done.json").read_text())
    sets = [SegmentationSet(torch.from_numpy(np.load(folder / f"{split}_images.npy")),
                            torch.from_numpy(np.load(folder / f"{split}_masks.npy")), meta[f"{split}_ids"], names,
                            IGNORE_INDEX) for split in ("train", "test")]
    return SegTaskData(train=sets[0], test=sets[1])


def _write_cached(folder: Path, data: SegTaskData) -> None:
    """`<folder>/{train,test}_{images,masks}.npy` + done.json, built in a partial folder of this process's own
    and renamed; when processes race, the first rename wins and the others drop their copy."""
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for split, part in (("train", data.train), ("test", data.test)):
        np.save(partial / f"{split}_images.npy", part.images.numpy())
        np.save(partial / f"{split}_masks.npy", part.masks.numpy())
    write_json(partial / "done.json", {"train_ids": data.train.ids, "test_ids": data.test.ids})
    try:
        os.rename(partial, folder)
    except OSError:  # another process finished first (the folder exists and is not empty)
        shutil.rmtree(partial)
        if not (folder / "done.json").is_file():
            raise


def load_fashion_composite(spec: CompositeSpec, root: str | None = None,
                           cache_dir: str | Path | None = None) -> SegTaskData:
    """The `fashion-composite` task: training and test canvases (module docstring), fixed by `spec.seed`.

    `cache_dir`: keep the drawn canvases in `<cache_dir>/composite/<key>/` (key: the spec and the source
    files' names and sizes) and read them from there next time; drawing 7,000 canvases takes ~20 s.
    """
    spec.check()
    names = class_names(spec.classes)
    folder = Path(cache_dir) / "composite" / _cache_key(spec, root) if cache_dir is not None else None
    if folder is not None and (cached := _read_cached(folder, names)) is not None:
        return cached
    fm = load_fashion_mnist(root)
    splits = []
    for code, (split, source, count) in enumerate((("train", fm.train, spec.train_images),
                                                    ("test", fm.test, spec.test_images))):
        rng = np.random.default_rng([spec.seed, code])
        images, masks = draw_canvases(source.images.tensor()[:, 0].numpy(), source.labels.numpy(), count, spec, rng)
        ids = [f"fashion-composite/{spec.seed}/{split}/{i}" for i in range(count)]
        splits.append(SegmentationSet(images, masks, ids, names, IGNORE_INDEX))
    data = SegTaskData(train=splits[0], test=splits[1])
    if folder is not None:
        _write_cached(folder, data)
    return data
