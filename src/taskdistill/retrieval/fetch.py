"""From curated pool rows to images the data layer can load: webdataset locations, and optional copies.

Where a row's image is, from the pool's parquet metadata (only the picked rows of one column are read):
    `image_path` column        a file path, or `shard.tar#key` (relative to the pool folder)
    `key` column + --shards    img2dataset naming: shard `SHARDS/<key[:digits]>.tar` (digits = 5), member `<key>.*`
Shards may be local or behind any fsspec URL (`--shards s3://bucket/shards`); remote ones are always copied.
`fetch_members` copies the picked members into new compact shards (`picked-00000.tar`, ...), reading each
source shard's headers once and then only the picked members' bytes by offset; each output shard is written
atomically. The manifest's `location` column (`shard.tar#key`) is what `distill.transfer.source` reads.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from taskdistill.atomic import atomic_path
from taskdistill.data.locations import (
    IMAGE_SUFFIXES,
    Member,
    parse_location,
    read_member,
    shard_members,
    split_key,
)
from taskdistill.errors import DataError
from taskdistill.progress import ProgressLine
from taskdistill.retrieval.clip_layout import ClipPool

SHARD_DIGITS = 5
_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"GIF8", "gif"), (b"BM", "bmp"), (b"II*\x00", "tif"),
          (b"MM\x00*", "tif"))


def locations_for(pool: ClipPool, rows: np.ndarray, shards: str | Path | None = None,
                  shard_digits: int = SHARD_DIGITS) -> tuple[list[str], list[str]]:
    """(ids, locations) of pool `rows` `[B]` (see the module doc)."""
    cols = pool.columns
    if shards is not None:
        if "key" not in cols:
            raise DataError(f"--shards needs a 'key' column in the metadata of '{pool.root}'; it has {cols}")
        keys = [str(k) for k in pool.column("key", rows)]
        if is_url(str(shards)):  # any fsspec URL (s3://, gs://, https://, ...): fetched by `fetch_members`
            root_url = str(shards).rstrip("/")
            return keys, [f"{root_url}/{k[:shard_digits]}.tar#{k}" for k in keys]
        root = Path(shards).resolve()
        return keys, [f"{root / (k[:shard_digits] + '.tar')}#{k}" for k in keys]
    if "image_path" in cols:
        paths = [str(p) for p in pool.column("image_path", rows)]
        locs = []
        for text in paths:
            p, key = parse_location(text, pool.root)
            locs.append(f"{p.resolve()}#{key}" if key is not None else str(p.resolve()))
        return paths, locs
    raise DataError(f"cannot tell where the images of '{pool.root}' are: its metadata has no 'image_path' column "
                    f"({cols}); pass --shards FOLDER with the webdataset shards (img2dataset naming, 'key' column)")


def is_url(text: str) -> bool:
    """A location on a remote filesystem (`s3://...`, `https://...`; anything fsspec opens), not a local path."""
    return "://" in text and not text.startswith("file://")


def _split(location: str) -> tuple[str, str | None]:
    """`URL.tar#key` -> (URL, key); a URL without a member key -> (URL, None)."""
    head, sep, tail = location.rpartition("#")
    return (head, tail) if sep and head.endswith(".tar") else (location, None)


class _RemoteShards:
    """Tar shards behind fsspec URLs: each opened once (seekable, ranged reads), its headers scanned once, and
    only the picked members' bytes read by offset."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[IO[bytes], dict[str, Member]]] = {}

    def read(self, url: str, key: str | None, row: int) -> bytes:
        try:
            import fsspec
        except ImportError:
            raise DataError(f"reading '{url}' needs fsspec: pip install 'taskdistill[retrieval]'") from None
        try:
            if key is None:
                with fsspec.open(url, "rb") as f:
                    return f.read()
            if url not in self._open:
                self.close()  # the plan is sorted by shard: one remote file open at a time
                f = fsspec.open(url, "rb").open()
                members: dict[str, Member] = {}
                with tarfile.open(fileobj=f, mode="r:") as tar:
                    for info in tar:
                        k, ext = split_key(info.name)
                        if info.isfile() and f".{ext}" in IMAGE_SUFFIXES:
                            members.setdefault(k, Member(info.offset_data, info.size))
                self._open[url] = (f, members)
            f, members = self._open[url]
        except (OSError, ValueError, tarfile.TarError) as e:
            raise DataError(f"cannot read picked image '{url}' (row {row} of the selection): {e}") from None
        if key not in members:
            raise DataError(f"shard '{url}' has no image with key '{key}' (row {row} of the selection); is --shards "
                            f"the location the pool was embedded from?")
        return read_member(f, members[key])

    def close(self) -> None:
        for f, _ in self._open.values():
            f.close()
        self._open.clear()


def _ext(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), "jpg")


def _add_sample(tar: tarfile.TarFile, name: str, blob: bytes, origin: str) -> None:
    for member, payload in ((f"{name}.{_ext(blob)}", blob), (f"{name}.json", json.dumps({"origin": origin}).encode())):
        info = tarfile.TarInfo(member)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))


def fetch_members(locations: Sequence[str], out: str | Path, shard_size: int = 10_000,
                  progress: bool = True) -> list[str]:
    """Copy the images at `locations` (`shard.tar#key`, or files) into `out/picked-NNNNN.tar`, grouped by source
    shard (so each is read once, front to back, and memory holds one image); returns each input's new
    location, in input order. A missing shard or key is a DataError naming it."""
    out = Path(out)
    plan: list[tuple[Path | str, str | None, int]] = []
    for i, loc in enumerate(locations):
        path, key = _split(loc) if is_url(loc) else parse_location(loc)
        plan.append((path, key, i))
    plan.sort(key=lambda t: (str(t[0]), t[2]))
    new_locations = [""] * len(locations)
    bar = ProgressLine(len(plan), "fetch picked images", "img", enabled=progress)
    files: dict[Path, IO[bytes]] = {}
    remote = _RemoteShards()
    try:
        for s0 in range(0, len(plan), shard_size):
            target = out / f"picked-{s0 // shard_size:05d}.tar"
            with atomic_path(target) as tmp, tarfile.open(tmp, "w") as tar:
                for j, (path, key, i) in enumerate(plan[s0:s0 + shard_size], start=s0):
                    if isinstance(path, str):  # a URL: read through fsspec
                        _add_sample(tar, f"{j:09d}", remote.read(path, key, i), locations[i])
                        new_locations[i] = f"{target.resolve()}#{j:09d}"
                        bar.update(1)
                        continue
                    if key is None:  # a plain image file
                        try:
                            blob = path.read_bytes()
                        except OSError as e:
                            raise DataError(f"cannot read picked image '{path}': {e}") from None
                        _add_sample(tar, f"{j:09d}", blob, locations[i])
                        new_locations[i] = f"{target.resolve()}#{j:09d}"
                        bar.update(1)
                        continue
                    members, _ = shard_members(path)
                    if key not in members:
                        raise DataError(f"shard '{path}' has no image with key '{key}' (row {i} of the selection); "
                                        f"is --shards the folder the pool was embedded from?")
                    if path not in files:  # the plan is sorted by shard: one source file open at a time
                        for f in files.values():
                            f.close()
                        files = {path: open(path, "rb")}  # noqa: SIM115 - closed below
                    _add_sample(tar, f"{j:09d}", read_member(files[path], members[key]), locations[i])
                    new_locations[i] = f"{target.resolve()}#{j:09d}"
                    bar.update(1)
    finally:
        for f in files.values():
            f.close()
        remote.close()
    bar.close()
    return new_locations
