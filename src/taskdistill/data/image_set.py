"""An in-memory image table: decoded uint8 pixels, labels and stable ids."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

UNLABELED = -1


@dataclass
class ImageSet:
    """Images `[N, C, H, W]` uint8 (C is 1 or 3), labels `[N]` int64 (-1 = unlabeled), ids and class names.

    `ids` are stable names of the images (file paths, or `<dataset>/<split>/<index>`), used in manifests
    and reports. `skipped` lists unreadable files that were left out (with `on_bad_image=skip`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    class_names: list[str]
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (n,) or len(self.ids) != n:
            raise ValueError(f"labels {tuple(self.labels.shape)} and ids ({len(self.ids)}) must match {n} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: torch.Tensor | list[int], drop_labels: bool = False) -> ImageSet:
        """A view on some rows; `drop_labels=True` gives the unlabeled view used for transfer sets."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        labels = torch.full((len(idx),), UNLABELED, dtype=torch.long) if drop_labels else self.labels[idx]
        return ImageSet(
            images=self.images[idx],
            labels=labels,
            ids=[self.ids[i] for i in idx.tolist()],
            class_names=self.class_names,
            skipped=list(self.skipped),
        )

    def content_hash(self) -> str:
        """sha256 over the pixels, shape and ids: changes whenever the set's content or order changes."""
        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        h.update(np.ascontiguousarray(self.images.numpy()).tobytes())
        h.update("\n".join(self.ids).encode())
        return h.hexdigest()
