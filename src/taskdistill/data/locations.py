"""Image locations: a file path, or `<shard>.tar#<key>` for one sample of a webdataset-style tar shard.

No torch here: image-store decode workers import this module. A shard is scanned once per process (its
members' offsets, cached while the file is unchanged) and read by offset, never extracted.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO

from taskdistill.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
UNKNOWN_SOURCE = "unknown"


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
class Member:
    """Where a shard member's bytes are: `offset` from the start of the tar file, `size` bytes."""

    offset: int
    size: int


@lru_cache(maxsize=64)
def _scan_shard(path: str, mtime_ns: int) -> tuple[dict[str, Member], dict[str, str]]:
    """Image members by key (first image member of a key wins) and each key's source, in tar order."""
    images: dict[str, Member] = {}
    sources: dict[str, str] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, ext = split_key(info.name)
                if f".{ext}" in IMAGE_SUFFIXES:
                    images.setdefault(key, Member(info.offset_data, info.size))
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


def shard_members(path: Path) -> tuple[dict[str, Member], dict[str, str]]:
    """(image member by key, source by key) of one tar shard; cached while the file is unchanged."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise DataError(f"tar shard '{path}' does not exist") from None
    return _scan_shard(str(path), mtime)


def read_member(f: IO[bytes], m: Member) -> bytes:
    f.seek(m.offset)
    return f.read(m.size)


class LocationReader:
    """Opens locations as binary file objects, keeping tar shards open across calls (close it when done)."""

    def __init__(self) -> None:
        self._open: dict[Path, IO[bytes]] = {}

    def read_bytes(self, location: str, base: Path | None = None) -> bytes:
        """The encoded bytes at `location`. Raises OSError / KeyError for a missing file or key."""
        path, key = parse_location(location, base)
        if key is None:
            return path.read_bytes()
        members, _ = shard_members(path)
        if key not in members:
            raise KeyError(f"no image with key '{key}' in '{path}'")
        if path not in self._open:
            self._open[path] = open(path, "rb")  # noqa: SIM115 - closed in close()
        return read_member(self._open[path], members[key])

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()
