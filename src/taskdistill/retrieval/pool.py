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
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Literal

import torch
from PIL import Image, UnidentifiedImageError

from taskdistill.data.image_set import UNLABELED, ImageSet
from taskdistill.data.sources import IMAGE_SUFFIXES, decode_image
from taskdistill.errors import DataError

PoolKind = Literal["folder", "csv", "shards"]
UNSORTED = "unsorted"
UNKNOWN_SOURCE = "unknown"
DECODE_ERRORS = (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError, KeyError)


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


def split_key(member_name: str) -> tuple[str, str]:
    """`dir/000123.png` -> (`dir/000123`, `png`): webdataset's rule, the key ends at the basename's first dot."""
    folder, fname = os.path.split(member_name)
    stem, _, ext = fname.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def parse_location(location: str, base: Path | None = None) -> tuple[Path, str | None]:
    """`/a/b.png` -> (path, None); `/a/shard.tar#key` -> (shard path, key). Relative paths join `base`."""
    path_text, key = location, None
    if "#" in location:
        head, _, tail = location.rpartition("#")
        if head.endswith(".tar"):
            path_text, key = head, tail
    p = Path(path_text)
    if not p.is_absolute() and base is not None:
        p = base / p
    return p, key


@dataclass(frozen=True)
class _Member:
    offset: int
    size: int


@lru_cache(maxsize=64)
def _scan_shard(path: str, mtime_ns: int) -> tuple[dict[str, _Member], dict[str, str]]:
    """Image members by key (first image member of a key wins) and each key's source, in tar order."""
    images: dict[str, _Member] = {}
    sources: dict[str, str] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, ext = split_key(info.name)
                if f".{ext}" in IMAGE_SUFFIXES:
                    images.setdefault(key, _Member(info.offset_data, info.size))
                elif ext == "json":
                    f = tar.extractfile(info)
                    try:
                        meta = json.loads(f.read()) if f is not None else {}
                    except ValueError:
                        meta = {}
                    sources[key] = str(meta.get("source", UNKNOWN_SOURCE)) if isinstance(meta, dict) else UNKNOWN_SOURCE
    except (OSError, tarfile.TarError) as e:
        raise DataError(f"cannot read tar shard '{path}': {e}. Rebuild or remove the shard.") from None
    return images, sources


def shard_members(path: Path) -> tuple[dict[str, _Member], dict[str, str]]:
    """(image member by key, source by key) of one tar shard; cached while the file is unchanged."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise DataError(f"tar shard '{path}' does not exist") from None
    return _scan_shard(str(path), mtime)


def _read_member(f: BinaryIO, m: _Member) -> bytes:
    f.seek(m.offset)
    return f.read(m.size)


def decode_bytes(data: bytes, size: int) -> torch.Tensor:
    """Encoded image bytes -> uint8 `[3, size, size]`, decoded exactly like a task image file."""
    return decode_image(io.BytesIO(data), size)  # type: ignore[arg-type]  # PIL opens file objects too


class _Reader:
    """Decodes locations, keeping tar shards open across calls (close it when done)."""

    def __init__(self) -> None:
        self._open: dict[Path, BinaryIO] = {}

    def read(self, location: str, size: int, base: Path | None = None) -> torch.Tensor:
        path, key = parse_location(location, base)
        if key is None:
            return decode_image(path, size)
        members, _ = shard_members(path)
        if key not in members:
            raise KeyError(f"no image with key '{key}' in '{path}'")
        if path not in self._open:
            self._open[path] = open(path, "rb")  # noqa: SIM115 - closed in close()
        return decode_bytes(_read_member(self._open[path], members[key]), size)

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()


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
        reader = _Reader()
        try:
            for b0 in range(start, stop, batch_size):
                chunk = self.entries[b0: min(b0 + batch_size, stop)]
                out = torch.zeros((len(chunk), 3, size, size), dtype=torch.uint8)
                ok = []
                for i, e in enumerate(chunk):
                    try:
                        out[i] = reader.read(e.location, size)
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


def decode_locations(locations: Sequence[str], ids: Sequence[str], class_names: list[str], size: int,
                     on_bad_image: Literal["fail", "skip"], base: Path | None = None,
                     desc: str = "decode transfer set") -> ImageSet:
    """An unlabeled ImageSet `[N, 3, size, size]` from locations (paths or `shard.tar#key`, relative to `base`)."""
    from tqdm.auto import tqdm

    out = torch.empty((len(locations), 3, size, size), dtype=torch.uint8)
    keep: list[int] = []
    skipped: list[str] = []
    reader = _Reader()
    try:
        for i, loc in enumerate(tqdm(locations, desc=desc, unit="img", leave=False,
                                     disable=None if len(locations) >= 500 else True)):
            try:
                out[i] = reader.read(loc, size, base)
                keep.append(i)
            except (*DECODE_ERRORS, DataError) as e:
                if on_bad_image == "fail":
                    raise DataError(f"cannot read image '{loc}': {e}. Fix or remove it, or pass --on-bad-image skip "
                                    f"(--set data.on_bad_image=skip) to leave unreadable images out.") from None
                skipped.append(loc)
    finally:
        reader.close()
    if not keep:
        raise DataError(f"no readable images in {desc} ({len(skipped)} unreadable)")
    idx = torch.tensor(keep, dtype=torch.long)
    return ImageSet(images=out[idx] if len(keep) < len(locations) else out,
                    labels=torch.full((len(keep),), UNLABELED, dtype=torch.long),
                    ids=[ids[i] for i in keep], class_names=class_names, skipped=skipped)
