"""Is a finished teacher-output cache entry sound? Array sizes, CRC32s and finite values against meta.json."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np

ARRAYS = ("values.npy", "indices.npy")


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc


def non_finite(values: np.ndarray, block_bytes: int = 1 << 24) -> int:
    """How many NaN/inf values `values` holds, read about `block_bytes` at a time."""
    rows = max(1, block_bytes // max(1, values[:1].nbytes))
    return sum(int(np.count_nonzero(~np.isfinite(values[i:i + rows]))) for i in range(0, len(values), rows))


def array_records(folder: Path) -> dict[str, dict[str, Any]]:
    """Shape, dtype, size in bytes and CRC32 of each array file in `folder` (kept in meta.json)."""
    out = {}
    for name in ARRAYS:
        if (folder / name).is_file():
            arr = np.load(folder / name, mmap_mode="r")
            out[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "bytes": (folder / name).stat().st_size,
                         "crc32": _crc32(folder / name)}
    return out


def entry_problem(folder: Path) -> str | None:
    """Why the finished entry in `folder` cannot be used (None when it is sound): meta.json unreadable, an array
    missing, truncated, unreadable, of another shape or changed since it was written, or NaN/inf values.
    Entries written before sizes and checksums were recorded get every check but those."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        expected = (int(meta["num_images"]), int(meta["num_views"]))
        topk = meta["storage"]["format"] == "topk"
        width = int(meta["num_outputs"]) if not topk else min(int(meta["storage"]["k"]), int(meta["num_outputs"]))
        records = meta.get("arrays")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"meta.json is unreadable: {type(e).__name__}: {e}"
    for name in ARRAYS if topk else ARRAYS[:1]:
        try:
            problem = _array_problem(folder / name, expected + (width,), records)
        except (KeyError, TypeError, AttributeError) as e:
            problem = f"meta.json's record of {name} is unreadable: {type(e).__name__}: {e}"
        if problem:
            return problem
    return None


def _array_problem(path: Path, shape: tuple[int, ...], records: dict[str, Any] | None) -> str | None:
    """What is wrong with one array file of an entry, checked against its record in meta.json (if any)."""
    name = path.name
    if not path.is_file():
        return f"{name} is missing"
    record = records[name] if records is not None else None
    if record is not None and path.stat().st_size != record["bytes"]:
        return f"{name} has {path.stat().st_size} bytes, {record['bytes']} were written"
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as e:
        return f"{name} is unreadable: {e}"
    if arr.shape != shape or (record is not None and str(arr.dtype) != record["dtype"]):
        return f"{name} holds {arr.dtype} {arr.shape}, meta.json says {shape}"
    if record is not None and _crc32(path) != record["crc32"]:
        return f"{name} does not match its CRC32 (its bytes changed after it was written)"
    if name == "values.npy" and (bad := non_finite(arr)):
        return f"{name} holds {bad} NaN/inf value(s)"
    return None


def discard(folder: Path) -> None:
    """Move `folder` out of the way first (readers never see it half-deleted), then delete it."""
    aside = folder.with_name(f"{folder.name}.damaged-{os.getpid()}")
    try:
        os.replace(folder, aside)
    except FileNotFoundError:  # another process moved it first
        return
    shutil.rmtree(aside, ignore_errors=True)
