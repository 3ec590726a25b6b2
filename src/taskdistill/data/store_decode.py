"""Decode a list of image locations straight into an image store's pixel file, in a pool of processes.

Each worker decodes a chunk of rows and writes them with positioned writes (`os.pwrite`) at their row's
offset, so no process holds more than one chunk of pixels and the parent receives only CRCs and errors.
No torch here: workers start with `spawn` and import only numpy, PIL and this package's data helpers.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskdistill.data.decode import DECODE_ERRORS, DecodePolicy, decode_array
from taskdistill.data.locations import LocationReader
from taskdistill.errors import DataError
from taskdistill.progress import ProgressLine

INLINE_BELOW = 256  # smaller sets decode in the calling process: starting workers would cost more


@dataclass
class DecodeResult:
    """Per-row CRC32 of the written pixels `[N]` (uint32) and the rows that could not be decoded."""

    crc32: np.ndarray
    bad: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Chunk:
    pixels_path: str
    offset: int
    policy: dict[str, Any]
    rows: list[int]
    locations: list[str]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def decode_chunk(chunk: _Chunk) -> tuple[list[int], list[int], dict[int, str]]:
    """Decode `chunk.rows` and write them into the pixel file; returns (rows, their CRC32s, errors by row).

    A file that cannot be decoded leaves its row zero and is reported; a failing *write* (disk full) raises.
    """
    policy = DecodePolicy.from_dict(chunk.policy)
    shape = policy.row_shape
    row_bytes = int(np.prod(shape))
    zero_crc = zlib.crc32(bytes(row_bytes))
    reader = LocationReader()
    crcs: list[int] = []
    bad: dict[int, str] = {}
    fd = os.open(chunk.pixels_path, os.O_WRONLY)
    try:
        for row, location in zip(chunk.rows, chunk.locations, strict=True):
            try:
                arr = decode_array(io.BytesIO(reader.read_bytes(location)), policy)
            except (*DECODE_ERRORS, KeyError, DataError) as e:
                bad[row] = f"{type(e).__name__}: {e}"
                crcs.append(zero_crc)
                continue
            data = arr.tobytes()
            _write_all(fd, data, chunk.offset + row * row_bytes)
            crcs.append(zlib.crc32(data))
    finally:
        os.close(fd)
        reader.close()
    return chunk.rows, crcs, bad


def _chunks(pixels_path: Path, offset: int, policy: DecodePolicy, locations: Sequence[str], size: int):
    for start in range(0, len(locations), size):
        stop = min(start + size, len(locations))
        yield _Chunk(str(pixels_path), offset, policy.to_dict(), list(range(start, stop)), list(locations[start:stop]))


def decode_into(pixels_path: Path, offset: int, policy: DecodePolicy, locations: Sequence[str], workers: int,
                desc: str, progress: bool = True) -> DecodeResult:
    """Decode every location into row i of the pixel file (which must exist at its full size)."""
    n = len(locations)
    result = DecodeResult(crc32=np.zeros(n, dtype=np.uint32))
    line = ProgressLine(n, desc, enabled=progress)

    def take(rows: list[int], crcs: list[int], bad: dict[int, str]) -> None:
        result.crc32[rows] = crcs
        result.bad.update(bad)
        line.update(len(rows))

    workers = max(1, min(workers, n // 64 or 1))
    if workers == 1 or n < INLINE_BELOW:
        for chunk in _chunks(pixels_path, offset, policy, locations, 256):
            take(*decode_chunk(chunk))
        line.close()
        return result
    chunk_size = max(16, min(256, n // (workers * 8)))
    pending: set[Future] = set()
    todo = _chunks(pixels_path, offset, policy, locations, chunk_size)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            for chunk in todo:
                pending.add(pool.submit(decode_chunk, chunk))
                if len(pending) >= workers * 4:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        take(*f.result())
            for f in pending:
                take(*f.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    line.close()
    return result
