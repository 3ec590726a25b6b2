"""Image pools: a folder tree, a CSV manifest, or webdataset-style tar shards, read in a fixed order.

- folder: `ROOT/<source>/**/<image>`; the source is the first sub-folder's name (files directly in ROOT
  get source `unsorted`); ids are paths relative to ROOT.
- CSV: columns `path[,source]`; relative paths are relative to the CSV's folder; ids are the paths as written.
- tar shards: `ROOT/*.tar` (sorted), each sample `<key>.<png|jpg|...>` plus an optional `<key>.json` holding
  `{"source": ...}`; ids are `<shard>/<key>` (e.g. `shard-00003.tar/0012345`).

Every entry has a location: an absolute file path, or `<absolute shard path>#<key>` for a sample in a shard.
Images are decoded like task images (`taskdistill.data.sources.decode_image`): RGB, alpha on white, resized.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from taskdistill.data.decode import DECODE_ERRORS as _DECODE_ERRORS
from taskdistill.data.locations import (  # noqa: F401 - parse_location, split_key: part of this module's API
    IMAGE_SUFFIXES,
    UNKNOWN_SOURCE,
    LocationReader,
    parse_location,
    shard_members,
    split_key,
)
from taskdistill.data.sources import decode_image
from taskdistill.errors import DataError

PoolKind = Literal["folder", "csv", "shards"]
UNSORTED = "unsorted"
DECODE_ERRORS = (*_DECODE_ERRORS, KeyError)


@dataclass(frozen=True)
class PoolEntry:
    """One pool image: a stable `id`, its `source` tag and its `location` (path, or `shard.tar#key`)."""

    id: str
    source: str
    location: str


@dataclass
class PoolBatch:
    """Decoded images `[B, 3, S, S]` uint8 of entries `start .. start + B`; `ok[i]` is False for unreadable ones
    (left black)."""

    start: int
    images: torch.Tensor
    entries: list[PoolEntry]
    ok: list[bool]


class ImagePool:
    """An ordered list of pool entries and the means to decode them in batches."""

    def __init__(self, root: Path, kind: PoolKind, entries: list[PoolEntry]) -> None:
        if not entries:
            raise DataError(f"image pool '{root}' holds no images")
        self.root, self.kind, self.entries = root, kind, entries

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    @property
    def sources(self) -> list[str]:
        return [e.source for e in self.entries]

    def fingerprint(self) -> str:
        """sha256 over ids and sources in order: changes when the pool gains, loses or reorders images."""
        h = hashlib.sha256()
        for e in self.entries:
            h.update(f"{e.id}\t{e.source}\n".encode())
        return h.hexdigest()

    def batches(self, batch_size: int, size: int, start: int = 0, stop: int | None = None,
                on_bad_image: Literal["fail", "skip"] = "fail") -> Iterator[PoolBatch]:
        """Decode entries `start .. stop` in order, `batch_size` at a time, to uint8 `[B, 3, size, size]`."""
        stop = len(self.entries) if stop is None else min(stop, len(self.entries))
        reader = LocationReader()
        try:
            for b0 in range(start, stop, batch_size):
                chunk = self.entries[b0: min(b0 + batch_size, stop)]
                out = torch.zeros((len(chunk), 3, size, size), dtype=torch.uint8)
                ok = []
                for i, e in enumerate(chunk):
                    try:
                        out[i] = decode_image(io.BytesIO(reader.read_bytes(e.location)), size)
                        ok.append(True)
                    except DECODE_ERRORS as err:
                        if on_bad_image == "fail":
                            raise DataError(
                                f"cannot read pool image '{e.id}' ({e.location}): {err}. Fix or remove it, or pass "
                                f"--on-bad-image skip to embed unreadable images as zero vectors (never curated)."
                            ) from None
                        ok.append(False)
                yield PoolBatch(start=b0, images=out, entries=list(chunk), ok=ok)
        finally:
            reader.close()


def _folder_entries(root: Path) -> list[PoolEntry]:
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                   key=lambda p: p.relative_to(root).as_posix())
    entries = []
    for p in files:
        rel = p.relative_to(root)
        source = rel.parts[0] if len(rel.parts) > 1 else UNSORTED
        entries.append(PoolEntry(id=rel.as_posix(), source=source, location=str(p.resolve())))
    return entries


def _csv_entries(path: Path) -> list[PoolEntry]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise DataError(f"pool manifest '{path}' needs a header with a 'path' column (and optionally 'source'), "
                            f"got {reader.fieldnames}")
        rows = list(reader)
    entries = []
    for n, row in enumerate(rows, start=2):
        text = (row.get("path") or "").strip()
        if not text:
            raise DataError(f"pool manifest '{path}' line {n}: empty path")
        p, key = parse_location(text, path.parent)
        location = f"{p.resolve()}#{key}" if key is not None else str(p.resolve())
        entries.append(PoolEntry(id=text, source=(row.get("source") or UNKNOWN_SOURCE).strip(), location=location))
    missing = [e.location for e in entries if not parse_location(e.location)[0].exists()]
    if missing:
        raise DataError(f"pool manifest '{path}' names {len(missing)} missing file(s), first: '{missing[0]}'")
    return entries


def _shard_entries(root: Path, shards: Sequence[Path]) -> list[PoolEntry]:
    entries = []
    for shard in shards:
        members, sources = shard_members(shard)
        rel = shard.relative_to(root).as_posix() if shard.is_relative_to(root) else shard.name
        absolute = str(shard.resolve())
        for key in members:
            entries.append(PoolEntry(id=f"{rel}/{key}", source=sources.get(key, UNKNOWN_SOURCE),
                                     location=f"{absolute}#{key}"))
    return entries


def open_pool(path: str | Path) -> ImagePool:
    """A pool from a folder of `*.tar` shards, a folder tree of images, a CSV manifest, or one `.tar` file."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        return ImagePool(p, "csv", _csv_entries(p))
    if p.is_file() and p.suffix.lower() == ".tar":
        return ImagePool(p.parent, "shards", _shard_entries(p.parent, [p]))
    if p.is_dir():
        shards = sorted(p.glob("*.tar"))
        if shards:
            return ImagePool(p, "shards", _shard_entries(p, shards))
        entries = _folder_entries(p)
        if not entries:
            raise DataError(f"pool folder '{p}' holds no *.tar shards and no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImagePool(p, "folder", entries)
    raise DataError(f"image pool '{p}' is neither a folder, a .csv manifest (path[,source]) nor a .tar shard")
