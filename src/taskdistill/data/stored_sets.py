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


SKIP_BAD = "--on-bad-image skip (--set data.on_bad_image=skip) leaves unreadable images out"


def _bad_lines(bad: dict[int, str], locations: Sequence[str]) -> list[str]:
    lines = [f"  {locations[r]}: {msg}" for r, msg in list(sorted(bad.items()))[:20]]
    return lines + ([f"  ... and {len(bad) - 20} more"] if len(bad) > 20 else [])


def load_image_files(locations: Sequence[str], labels: Sequence[int], ids: Sequence[str], class_names: list[str],
                     policy: DecodePolicy, on_bad_image: Literal["fail", "skip"], store: StoreOptions,
                     description: str, base: Path | None = None, problems: Sequence[str] = ()) -> ImageSet:
    """An ImageSet over the image store of `locations` (paths or `shard.tar#key`; relative ones join `base`).

    Every missing or unreadable file is found in one pass: with `on_bad_image="fail"` they are all listed in
    one error, together with `problems` the caller found before (e.g. empty class folders); the store stays,
    so a rerun with `skip` decodes nothing again. With `skip` they are left out and listed in `skipped`.
    """
    if not (len(locations) == len(labels) == len(ids)):
        raise ValueError("locations, labels and ids must have the same length")
    stats = stat_sources(locations, base)
    missing = {i: "file does not exist" for i, s in enumerate(stats) if s is None}
    present = [i for i, s in enumerate(stats) if s is not None]
    if not present:
        raise DataError("\n".join([f"no readable images in {description}:", *problems,
                                   *_bad_lines(missing, locations)]))
    sources = [stats[i] for i in present]
    info = open_store(sources, policy, store.root, store.workers, description, store.progress)  # type: ignore[arg-type]
    bad = {present[r]: msg for r, msg in info.bad.items()}
    failing = dict(sorted({**missing, **bad}.items())) if on_bad_image == "fail" else {}
    if failing or problems:
        head = [f"{len(problems) + len(failing)} problem(s) in {description}:", *problems]
        if failing:
            head += [f"  {len(failing)} unreadable or missing image(s):", *_bad_lines(failing, locations)]
        fixes = ["Fix or remove them."] + ([f"Or: {SKIP_BAD}."] if failing else [])
        raise DataError("\n".join(head + fixes))
    rows = store_rows(info)
    readable = np.ones(len(present), dtype=bool)
    readable[np.fromiter(info.bad, dtype=np.int64, count=len(info.bad))] = False
    keep_rows = np.flatnonzero(readable)
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
