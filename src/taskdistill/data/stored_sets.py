"""Image sets backed by an image store: files are decoded once (in parallel) and then gathered by index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from taskdistill.data.decode import DecodePolicy
from taskdistill.data.image_rows import FileArray, ImageRows
from taskdistill.data.image_set import ImageSet
from taskdistill.data.image_store import StoreInfo, open_store, stat_sources
from taskdistill.errors import DataError


@dataclass(frozen=True)
class StoreOptions:
    """Where image stores live (`None`: the default cache folder), how many processes decode, progress lines."""

    root: Path | None = None
    workers: int | None = None
    progress: bool = True


def store_rows(info: StoreInfo) -> ImageRows:
    """All rows of a store, read from its pixel file."""
    return ImageRows(FileArray(info.pixels_path, info.pixels_offset, info.shape, info.key))


def _list_bad(bad: dict[int, str], locations: Sequence[str], description: str) -> str:
    lines = [f"  {locations[r]}: {msg}" for r, msg in list(sorted(bad.items()))[:20]]
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    return (f"{len(bad)} unreadable or missing image(s) in {description}:\n" + "\n".join(lines) + more +
            "\nFix or remove them, or pass --on-bad-image skip (--set data.on_bad_image=skip) to leave them out.")


def load_image_files(locations: Sequence[str], labels: Sequence[int], ids: Sequence[str], class_names: list[str],
                     policy: DecodePolicy, on_bad_image: Literal["fail", "skip"], store: StoreOptions,
                     description: str, base: Path | None = None) -> ImageSet:
    """An ImageSet over the image store of `locations` (paths or `shard.tar#key`; relative ones join `base`).

    Every missing or unreadable file is found in one pass: with `on_bad_image="fail"` they are all listed in
    one error (the store stays, so a rerun with `skip` decodes nothing again); with `skip` they are left out
    and listed in the set's `skipped`.
    """
    if not (len(locations) == len(labels) == len(ids)):
        raise ValueError("locations, labels and ids must have the same length")
    stats = stat_sources(locations, base)
    missing = {i: "file does not exist" for i, s in enumerate(stats) if s is None}
    present = [i for i, s in enumerate(stats) if s is not None]
    if not present:
        raise DataError(f"no readable images in {description}: " + _list_bad(missing, locations, description))
    sources = [stats[i] for i in present]
    info = open_store(sources, policy, store.root, store.workers, description, store.progress)  # type: ignore[arg-type]
    bad = {present[r]: msg for r, msg in info.bad.items()}
    if (bad or missing) and on_bad_image == "fail":
        raise DataError(_list_bad({**missing, **bad}, locations, description))
    rows = store_rows(info)
    keep_rows = np.array([r for r in range(len(present)) if r not in info.bad], dtype=np.int64)
    if len(keep_rows) == 0:
        raise DataError(f"no readable images in {description} ({len(bad) + len(missing)} unreadable or missing)")
    keep = [present[r] for r in keep_rows.tolist()]
    skipped = [locations[i] for i in sorted({**missing, **bad})]
    label_t = torch.as_tensor(list(labels), dtype=torch.long)[torch.as_tensor(keep, dtype=torch.long)]
    images = rows if len(keep_rows) == len(rows) else rows.select(keep_rows)
    return ImageSet(images, label_t, [ids[i] for i in keep], class_names, skipped=skipped, policy=policy)


def stores_of(*sets: ImageSet | None) -> list[StoreInfo]:
    """The image stores that hold the pixels of `sets` (each once, in order of first use)."""
    from taskdistill.data.image_store import read_store

    seen: dict[Path, StoreInfo] = {}
    for s in sets:
        array = getattr(getattr(s, "images", None), "array", None)
        if isinstance(array, FileArray) and array.path.parent not in seen:
            seen[array.path.parent] = read_store(array.path.parent)
    return list(seen.values())
