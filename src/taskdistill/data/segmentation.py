"""Segmentation data: images with per-pixel class-index masks, the folder spec that stores them, few-shot
sampling by image count, and the unlabeled view used as a transfer set.

Folder spec (one folder per split; `data.root` is the training split, `data.test_root` the test split):

    <split>/classes.txt        one class name per line; line i names class index i (usually 0 = background)
    <split>/images/<stem>.png  images (any of png, jpg, jpeg, bmp, webp, tif, tiff)
    <split>/masks/<stem>.png   single-channel index PNG (mode L, P or I;16), the same stem as its image;
                               pixel value = class index, or the ignore index (default 255) for unlabeled pixels

Images are decoded once to uint8 `[3, S, S]` (squashed to a square of side S, as for classification) and
masks resized to `[S, S]` with nearest-neighbour sampling, so indices are never blended.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from taskdistill.atomic import atomic_path, write_text
from taskdistill.data.decode import DecodePolicy
from taskdistill.data.image_set import UNLABELED, ImageSet
from taskdistill.data.sources import IMAGE_SUFFIXES, decode_image
from taskdistill.data.splits import FewShotSplit
from taskdistill.errors import DataError

IGNORE_INDEX = 255
MASK_MODES = ("L", "P", "I;16", "I")


@dataclass
class SegmentationSet:
    """Images uint8 `[N, C, H, W]` (C = 1 or 3), masks uint8 `[N, H, W]` (class index or `ignore_index`),
    stable ids and class names."""

    images: torch.Tensor
    masks: torch.Tensor
    ids: list[str]
    class_names: list[str]
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.masks.dtype != torch.uint8 or self.masks.shape != (n, *self.images.shape[-2:]):
            raise ValueError(f"masks must be uint8 [N, H, W] = {(n, *self.images.shape[-2:])}, "
                             f"got {self.masks.dtype} {tuple(self.masks.shape)}")
        if len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} images")
        if not 0 <= self.ignore_index <= 255 or self.ignore_index < len(self.class_names):
            raise ValueError(f"ignore_index {self.ignore_index} must be in [{len(self.class_names)}, 255]: "
                             f"above every class index and storable in a uint8 mask")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def targets(self) -> dict[str, torch.Tensor]:
        """What a supervised batch carries besides its images: `{"masks": uint8 [N, H, W]}`."""
        return {"masks": self.masks}

    def subset(self, indices: torch.Tensor | list[int]) -> SegmentationSet:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return SegmentationSet(self.images[idx], self.masks[idx], [self.ids[i] for i in idx.tolist()],
                               self.class_names, self.ignore_index)

    def unlabeled(self, indices: torch.Tensor | list[int] | None = None) -> ImageSet:
        """The images without their masks (all, or `indices`): the unlabeled view a transfer set is cut from."""
        idx = torch.arange(len(self)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(self.images[idx], torch.full((len(idx),), UNLABELED, dtype=torch.long),
                        [self.ids[i] for i in idx.tolist()], self.class_names)

    def content_hash(self) -> str:
        """sha256 over pixels, masks and ids."""
        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        h.update(np.ascontiguousarray(self.images.numpy()).tobytes())
        h.update(np.ascontiguousarray(self.masks.numpy()).tobytes())
        h.update("\n".join(self.ids).encode())
        return h.hexdigest()


@dataclass
class SegTaskData:
    """The training pool (masks known; the few-shot split picks which are used) and the test split."""

    train: SegmentationSet
    test: SegmentationSet

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names


# ---- reading ------------------------------------------------------------------------------------
def read_class_names(path: Path) -> list[str]:
    """Class names from `classes.txt` (one per line, blank lines and `#` comments skipped)."""
    if not path.is_file():
        raise DataError(f"segmentation folder '{path.parent}' has no classes.txt; write one class name per line "
                        f"(line i names mask value i, e.g. 'background' first)")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not names:
        raise DataError(f"'{path}' names no classes; write one class name per line")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"'{path}' names a class twice: {dup}")
    return names


def read_mask(path: Path, size: int | None, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """An index PNG -> uint8 `[size, size]` (nearest-neighbour resize; `size=None` keeps its own size).

    Values must be class indices `< num_classes` or `ignore_index`; anything else raises DataError naming
    the file and the values.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in MASK_MODES:
                raise DataError(f"mask '{path}' is a {im.mode} image; masks must be single-channel index PNGs "
                                f"(mode L or P: pixel value = class index, {ignore_index} = ignore)")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.NEAREST)
            arr = np.asarray(im).astype(np.int64)
    except (OSError, ValueError, UnidentifiedImageError) as e:
        raise DataError(f"cannot read mask '{path}': {e}") from None
    bad = np.unique(arr[(arr >= num_classes) & (arr != ignore_index)])
    if bad.size:
        raise DataError(f"mask '{path}' has values {bad[:8].tolist()} that are neither a class index "
                        f"(0..{num_classes - 1}, classes.txt) nor the ignore index {ignore_index}; add the classes "
                        f"to classes.txt or map those pixels to {ignore_index}")
    return torch.from_numpy(arr.astype(np.uint8))


def load_seg_folder(root: str | Path, size: int, ignore_index: int = IGNORE_INDEX,
                    class_names: list[str] | None = None) -> SegmentationSet:
    """A folder in the spec above -> SegmentationSet at `size` px. `class_names`: those of the training split,
    which this split's classes.txt (when present) must repeat."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"segmentation folder '{root}' does not exist or is not a folder")
    names = read_class_names(root / "classes.txt") if (root / "classes.txt").is_file() or class_names is None \
        else list(class_names)
    if class_names is not None and names != list(class_names):
        raise DataError(f"'{root}/classes.txt' lists {names}, the training split {list(class_names)}; "
                        f"both splits must use the same classes in the same order")
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise DataError(f"segmentation folder '{root}' needs images/ and masks/ subfolders; '{d}' is missing")
    files = sorted(f for f in img_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"'{img_dir}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        raise DataError(f"'{img_dir}' has two images with the same stem; masks are matched by stem")
    missing = [s for s in stems if not (mask_dir / f"{s}.png").is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) in '{img_dir}' have no mask '{mask_dir}/<stem>.png', "
                        f"first: '{missing[0]}'")
    images = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    masks = torch.empty((len(files), size, size), dtype=torch.uint8)
    for i, f in enumerate(files):
        try:
            images[i] = decode_image(f, DecodePolicy(size, resize="squash"))  # masks are squashed too
        except (OSError, ValueError, UnidentifiedImageError) as e:
            raise DataError(f"cannot read image '{f}': {e}. Fix or remove it together with its mask.") from None
        masks[i] = read_mask(mask_dir / f"{f.stem}.png", size, len(names), ignore_index)
    return SegmentationSet(images, masks, [str(f) for f in files], names, ignore_index)


def load_seg_folders(root: str | None, test_root: str | None, size: int,
                     ignore_index: int = IGNORE_INDEX) -> SegTaskData:
    """Training and test splits of the folder spec (`data.root`, `data.test_root`)."""
    if root is None or test_root is None:
        raise DataError("dataset 'seg-folder' needs data.root (training split) and data.test_root (test split), "
                        "each holding classes.txt, images/ and masks/")
    train = load_seg_folder(root, size, ignore_index)
    return SegTaskData(train=train, test=load_seg_folder(test_root, size, ignore_index, train.class_names))


# ---- writing ------------------------------------------------------------------------------------
def palette(num_classes: int) -> list[tuple[int, int, int]]:
    """A fixed colour per class index (0 black, then the PASCAL VOC bit-interleaved colours)."""
    colours = []
    for i in range(max(num_classes, 1)):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours.append((r, g, b))
    return colours


def mask_image(mask: np.ndarray | torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Image.Image:
    """uint8 `[H, W]` indices -> a palette PNG image: colour-coded, and its pixel values are the indices
    (so it reads back with `read_mask`); ignore pixels are white."""
    arr = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8))
    im = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
    flat = [0] * 768
    for i, (r, g, b) in enumerate(palette(num_classes)):
        flat[3 * i: 3 * i + 3] = [r, g, b]
    flat[3 * ignore_index: 3 * ignore_index + 3] = [255, 255, 255]
    im.putpalette(flat)
    return im


def write_seg_folder(data: SegmentationSet, folder: str | Path) -> Path:
    """Write `data` in the folder spec (classes.txt, images/<i>.png, masks/<i>.png); files written atomically."""
    folder = Path(folder)
    width = max(5, len(str(len(data))))
    for i in range(len(data)):
        stem = f"{i:0{width}d}"
        img = data.images[i]
        arr = (img.expand(3, -1, -1) if img.shape[0] == 1 else img).permute(1, 2, 0).numpy()
        with atomic_path(folder / "images" / f"{stem}.png") as tmp:
            Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")
        with atomic_path(folder / "masks" / f"{stem}.png") as tmp:
            mask_image(data.masks[i], data.num_classes, data.ignore_index).save(tmp, format="PNG")
    write_text(folder / "classes.txt", "\n".join(data.class_names) + "\n")
    return folder


# ---- few-shot sampling --------------------------------------------------------------------------
def few_shot_images(n: int, count: int, seed: int, val_count: int = 0) -> FewShotSplit:
    """Pick `count` labeled images (the first `val_count` of them kept for validation) out of `n`, from `seed`.

    Segmentation budgets are counted in images, not per class: one image labels many classes at once.
    """
    if count < 1:
        raise DataError(f"segmentation.labeled_images must be >= 1, got {count}")
    if val_count < 0 or val_count >= count:
        raise DataError(f"segmentation.val_images={val_count} must be >= 0 and leave training images out of "
                        f"segmentation.labeled_images={count}")
    if count > n:
        raise DataError(f"segmentation.labeled_images={count} asks for more images than the training pool "
                        f"holds ({n}); lower it or give a larger pool")
    picked = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:count]
    val, labeled = torch.sort(picked[:val_count]).values, torch.sort(picked[val_count:]).values
    taken = torch.zeros(n, dtype=torch.bool)
    taken[picked] = True
    return FewShotSplit(labeled=labeled, val=val, unlabeled=torch.nonzero(~taken).flatten())
