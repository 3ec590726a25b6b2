"""An image table: uint8 pixels gathered by index (in memory or from an image store), labels and stable ids."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from taskdistill.data.decode import DecodePolicy
from taskdistill.data.image_rows import ImageRows

UNLABELED = -1


@dataclass
class ImageSet:
    """Images `[N, C, H, W]` uint8 (C is 1 or 3), labels `[N]` int64 (-1 = unlabeled), ids and class names.

    `images` is an `ImageRows` (a tensor given here is wrapped): `images[idx]` reads a batch, `subset` selects
    rows without copying pixels. `ids` are stable names of the images (file paths, or
    `<dataset>/<split>/<index>`), used in manifests and reports. `skipped` lists unreadable files that were
    left out (with `on_bad_image=skip`). `policy` is how files were decoded into these pixels (None: unknown).
    """

    images: ImageRows
    labels: torch.Tensor
    ids: list[str]
    class_names: list[str]
    skipped: list[str] = field(default_factory=list)
    policy: DecodePolicy | None = None

    def __post_init__(self) -> None:
        if isinstance(self.images, torch.Tensor):
            if self.images.dtype != torch.uint8 or self.images.ndim != 4:
                raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
            self.images = ImageRows(self.images)
        n = len(self.images)
        if self.labels.shape != (n,) or len(self.ids) != n:
            raise ValueError(f"labels {tuple(self.labels.shape)} and ids ({len(self.ids)}) must match {n} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def targets(self) -> dict[str, torch.Tensor]:
        """What a supervised batch carries besides its images: `{"labels": [N]}`."""
        return {"labels": self.labels}

    def subset(self, indices: torch.Tensor | list[int], drop_labels: bool = False) -> ImageSet:
        """Some rows (no pixels copied); `drop_labels=True` gives the unlabeled view used for transfer sets."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        labels = torch.full((len(idx),), UNLABELED, dtype=torch.long) if drop_labels else self.labels[idx]
        return ImageSet(
            images=self.images.select(idx),
            labels=labels,
            ids=[self.ids[i] for i in idx.tolist()],
            class_names=self.class_names,
            skipped=list(self.skipped),
            policy=self.policy,
        )

    def content_hash(self) -> str:
        """sha256 over the pixels' fingerprint (a store's key, or an in-memory array's bytes), the rows taken and
        the ids: changes whenever the set's content or order changes. Costs no pixel reads for a store."""
        h = hashlib.sha256(self.images.fingerprint().encode())
        for name in self.ids:
            h.update(name.encode())
            h.update(b"\n")
        return h.hexdigest()
