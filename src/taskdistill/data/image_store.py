"""The image store: images decoded once, at a fixed size, into a file every run, stage and process shares.

    <store_dir>/<key>/pixels.npy    uint8 [N, C, S, S] (a plain .npy: `np.load(path, mmap_mode="r")` reads it)
                      crc32.npy     uint32 [N], CRC32 of each row's bytes (`taskdistill cache verify`)
                      index.json    every row's source: location, size in bytes, mtime (ns)
                      store.json    written last: policy, shape, checksums, unreadable rows, build time
    <store_dir>/<key>.lock          held while the store is built (other processes wait, then read it)
    <store_dir>/<key>.partial/      a build in progress; one left by a crash is removed and rebuilt

The key is a hash of the decode policy and of every source's (location, size, mtime): the same files with the
same policy map to the same store; a changed file gives another key, so a stale store is never read. A store
folder counts only if its `store.json` matches its files (sizes and the index checksum); anything else is
reported and rebuilt. No torch here.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskdistill.data.decode import DECODER_VERSION, DecodePolicy
from taskdistill.data.store_decode import decode_into, usable_cores
from taskdistill.errors import DataError
from taskdistill.folders import exclusive_lock, unwritable_reason
from taskdistill.version import __version__

STORE_FORMAT = "taskdistill-image-store/1"
MARKER = "store.json"
CACHE_ENV = "TASKDISTILL_CACHE_DIR"
_HEADROOM = 64 << 20  # bytes kept free beyond the store's own size


def default_store_dir() -> Path:
    """`$TASKDISTILL_CACHE_DIR/stores`, else `$XDG_CACHE_HOME/taskdistill/stores`, else `~/.cache/taskdistill/stores`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "stores"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "taskdistill" / "stores"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@dataclass(frozen=True)
class SourceFile:
    """One image's source: an absolute location (path, or `shard.tar#key`) and its file's size and mtime."""

    location: str
    size: int
    mtime_ns: int


def stat_sources(locations: Sequence[str], base: Path | None = None) -> list[SourceFile | None]:
    """Resolve and stat every location (each folder resolved once, each tar shard stat'ed once); None where the
    file does not exist. String paths, not pathlib: this runs once per image on every run."""
    real_dirs: dict[str, str] = {}
    stats: dict[str, os.stat_result | None] = {}
    out: list[SourceFile | None] = []
    base_text = os.fspath(base) if base is not None else None
    for loc in locations:
        path_text, key = loc, None
        if "#" in loc:
            head, _, tail = loc.rpartition("#")
            if head.endswith(".tar"):
                path_text, key = head, tail
        if base_text is not None and not os.path.isabs(path_text):
            path_text = os.path.join(base_text, path_text)
        folder, name = os.path.split(path_text)
        real = real_dirs.get(folder)
        if real is None:
            real = real_dirs[folder] = os.path.realpath(folder or ".")
        path = os.path.join(real, name)
        if path not in stats:
            try:
                stats[path] = os.stat(path)
            except OSError:
                stats[path] = None
        st = stats[path]
        out.append(None if st is None else
                   SourceFile(f"{path}#{key}" if key is not None else path, st.st_size, st.st_mtime_ns))
    return out


def _hash_sources(policy: DecodePolicy, sources: Sequence[SourceFile], with_stat: bool) -> str:
    h = hashlib.sha256(json.dumps({"format": STORE_FORMAT, "decoder": DECODER_VERSION, "policy": policy.to_dict()},
                                  sort_keys=True).encode())
    for s in sources:
        h.update((f"{s.location}\t{s.size}\t{s.mtime_ns}\n" if with_stat else f"{s.location}\n").encode())
    return h.hexdigest()[:32]


def store_key(policy: DecodePolicy, sources: Sequence[SourceFile]) -> str:
    """The store's name: the policy and every source's location, size and mtime."""
    return _hash_sources(policy, sources, with_stat=True)


@dataclass
class StoreInfo:
    """A complete store on disk, as its `store.json` describes it."""

    key: str
    path: Path
    policy: DecodePolicy
    num_images: int
    row_shape: tuple[int, int, int]
    pixels_offset: int
    bad: dict[int, str] = field(default_factory=dict)
    description: str = ""
    created: str = ""
    build_seconds: float = 0.0
    workers: int = 1

    @property
    def pixels_path(self) -> Path:
        return self.path / "pixels.npy"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.num_images, *self.row_shape)

    @property
    def pixels_bytes(self) -> int:
        return self.num_images * int(np.prod(self.row_shape))

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


class DamagedStore(Exception):
    """A store folder whose files do not match its `store.json` (the message says what differs)."""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_store(path: Path) -> StoreInfo:
    """The complete store in `path`, checked against its marker; raises DamagedStore if anything differs."""
    marker = path / MARKER
    try:
        meta = json.loads(marker.read_text())
    except FileNotFoundError:
        raise DamagedStore("no store.json (the build did not finish)") from None
    except (OSError, ValueError) as e:
        raise DamagedStore(f"unreadable store.json ({e})") from None
    if meta.get("format") != STORE_FORMAT:
        raise DamagedStore(f"format {meta.get('format')!r}, expected {STORE_FORMAT!r}")
    info = StoreInfo(key=meta["key"], path=path, policy=DecodePolicy.from_dict(meta["policy"]),
                     num_images=int(meta["num_images"]), row_shape=tuple(meta["row_shape"]),  # type: ignore[arg-type]
                     pixels_offset=int(meta["pixels_offset"]), bad={int(k): v for k, v in meta["bad"].items()},
                     description=meta.get("description", ""), created=meta.get("created", ""),
                     build_seconds=float(meta.get("build_seconds", 0.0)), workers=int(meta.get("workers", 1)))
    expected = {"pixels.npy": info.pixels_offset + info.pixels_bytes, "crc32.npy": None, "index.json": None}
    for name, size in expected.items():
        f = path / name
        if not f.is_file():
            raise DamagedStore(f"{name} is missing")
        if size is not None and f.stat().st_size != size:
            raise DamagedStore(f"{name} has {f.stat().st_size} bytes, expected {size}")
    for name in ("index.json", "crc32.npy"):
        if _sha256_file(path / name) != meta["sha256"][name]:
            raise DamagedStore(f"{name} does not match its checksum")
    return info


def _check_writable(root: Path) -> None:
    reason = unwritable_reason(root)
    if reason is not None:
        raise DataError(f"the image store folder '{root}' is not writable ({reason}). Point data.store_dir "
                        f"(or ${CACHE_ENV}) at a writable folder.")


def _reserve(fd: int, size: int, root: Path) -> None:
    free = shutil.disk_usage(root).free
    if free < size + _HEADROOM:
        raise DataError(f"not enough disk space for an image store in '{root}': it needs {human_bytes(size)} "
                        f"({size:,} bytes), {human_bytes(free)} are free. Free some space (`taskdistill cache ls` / "
                        f"`cache rm`), point data.store_dir at a larger disk, or lower data.load_size.")
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise
        os.ftruncate(fd, size)  # the file system cannot preallocate: a sparse file, filled as rows arrive


def _build(partial: Path, key: str, policy: DecodePolicy, sources: Sequence[SourceFile], workers: int,
           description: str, progress: bool) -> None:
    root = partial.parent
    partial.mkdir(parents=True)
    n = len(sources)
    shape = (n, *policy.row_shape)
    start = time.monotonic()
    with open(partial / "pixels.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        offset = f.tell()
        f.flush()
        _reserve(f.fileno(), offset + int(np.prod(shape)), root)
    result = decode_into(partial / "pixels.npy", offset, policy, [s.location for s in sources], workers,
                         f"decode {description}", progress)
    np.save(partial / "crc32.npy", result.crc32)
    index = {"format": STORE_FORMAT, "locations": [s.location for s in sources],
             "sizes": [s.size for s in sources], "mtimes_ns": [s.mtime_ns for s in sources]}
    (partial / "index.json").write_text(json.dumps(index))
    with open(partial / "pixels.npy", "rb") as f:
        os.fsync(f.fileno())
    meta = {
        "format": STORE_FORMAT, "key": key, "paths_key": _hash_sources(policy, sources, with_stat=False),
        "description": description, "policy": policy.to_dict(), "num_images": n, "row_shape": list(policy.row_shape),
        "pixels_offset": offset, "bad": {str(k): v for k, v in sorted(result.bad.items())},
        "sha256": {name: _sha256_file(partial / name) for name in ("index.json", "crc32.npy")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "build_seconds": round(time.monotonic() - start, 2),
        "decode_seconds": round(result.seconds, 2), "workers": workers,
        "worker_peak_rss_mb": round(result.worker_peak_rss_kb / 1024, 1), "taskdistill_version": __version__,
    }
    tmp = partial / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, partial / MARKER)


def _stale_stores(root: Path, paths_key: str, key: str) -> list[Path]:
    """Complete stores of the same files and policy whose files have changed since (another size or mtime)."""
    out = []
    for marker in root.glob(f"*/{MARKER}"):
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("paths_key") == paths_key and meta.get("key") != key:
            out.append(marker.parent)
    return out


def open_store(sources: Sequence[SourceFile], policy: DecodePolicy, root: Path | None = None,
               workers: int | None = None, description: str = "images", progress: bool = True) -> StoreInfo:
    """The store of `sources` decoded by `policy` under `root`: opened if it exists, else built (once, even
    when several processes ask at the same time: the others wait for the builder and then read its store)."""
    if not sources:
        raise DataError(f"no images to store for {description}")
    root = Path(root) if root is not None else default_store_dir()
    _check_writable(root)
    key = store_key(policy, sources)
    final, partial = root / key, root / f"{key}.partial"
    with exclusive_lock(root / f"{key}.lock", f"the image store of {description} ({final})"):
        if final.exists():
            try:
                info = read_store(final)
                os.utime(final / MARKER)  # last use, for `taskdistill cache ls`
                return info
            except DamagedStore as e:
                print(f"image store {final} is damaged ({e}); rebuilding it", file=sys.stderr, flush=True)
                shutil.rmtree(final)
        if partial.exists():
            print(f"image store {partial} was left half-written by an interrupted build; rebuilding it",
                  file=sys.stderr, flush=True)
            shutil.rmtree(partial)
        for old in _stale_stores(root, _hash_sources(policy, sources, with_stat=False), key):
            print(f"image store: source files of {description} changed since {old.name} was built; building a new "
                  f"store (`taskdistill cache rm {old.name[:12]}` frees the old one)", file=sys.stderr, flush=True)
        workers = usable_cores() if workers is None else max(1, int(workers))
        try:
            _build(partial, key, policy, sources, workers, description, progress)
        except BaseException as e:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                need = len(sources) * int(np.prod(policy.row_shape))
                raise DataError(f"the disk of '{root}' filled up while building the image store of {description} "
                                f"(it needs {human_bytes(need)}, {need:,} bytes); the partial store was removed. "
                                f"Free space, or point data.store_dir at a larger disk.") from None
            raise
        os.replace(partial, final)
        return read_store(final)


def list_stores(root: Path | None = None) -> tuple[list[StoreInfo], list[tuple[Path, str]]]:
    """(complete stores, [(folder, problem)] for partial or damaged ones) under `root`, newest use first."""
    root = Path(root) if root is not None else default_store_dir()
    good: list[StoreInfo] = []
    bad: list[tuple[Path, str]] = []
    if not root.is_dir():
        return good, bad
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name.endswith(".partial"):
            bad.append((d, "partial: a build in progress, or one left by a crash"))
            continue
        try:
            good.append(read_store(d))
        except DamagedStore as e:
            bad.append((d, f"damaged: {e}"))
    good.sort(key=lambda s: (s.path / MARKER).stat().st_mtime if (s.path / MARKER).is_file() else 0.0, reverse=True)
    return good, bad


def remove_store(path: Path) -> int:
    """Delete a store folder; returns the bytes freed. Its lock file stays: removing it would let a process
    already waiting on the old file and a newcomer locking a new one both in."""
    freed = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    key = path.name.removesuffix(".partial")
    with exclusive_lock(path.parent / f"{key}.lock", str(path)):
        shutil.rmtree(path, ignore_errors=True)
    return freed


def verify_store(info: StoreInfo) -> list[int]:
    """Rows whose pixels no longer match the CRC32 recorded when they were written (reads the whole store)."""
    crc = np.load(info.path / "crc32.npy")
    row_bytes = int(np.prod(info.row_shape))
    damaged: list[int] = []
    with info.pixels_path.open("rb") as f:
        f.seek(info.pixels_offset)
        rows_per_read = max(1, (16 << 20) // row_bytes)
        for start in range(0, info.num_images, rows_per_read):
            block = f.read(min(rows_per_read, info.num_images - start) * row_bytes)
            for j in range(len(block) // row_bytes):
                if zlib.crc32(block[j * row_bytes:(j + 1) * row_bytes]) != int(crc[start + j]):
                    damaged.append(start + j)
    return damaged


def store_summary(info: StoreInfo) -> dict[str, Any]:
    """What `taskdistill prepare` and `cache ls` print about a store."""
    return {"key": info.key, "path": str(info.path), "images": info.num_images, "shape": list(info.shape),
            "bytes": info.disk_bytes(), "unreadable": len(info.bad), "description": info.description,
            "policy": info.policy.to_dict(), "created": info.created, "build_seconds": info.build_seconds}
