"""Decode a list of image locations straight into an image store's pixel file, in a pool of processes.

Each worker decodes a chunk of rows and writes them with positioned writes (`os.pwrite`) at their row's
offset, so no process holds more than one chunk of pixels and the parent receives only CRCs and errors.
Workers are plain subprocesses (`python -m taskdistill.data.store_decode`) that talk JSON lines over their
pipes: they import only numpy, PIL and this package's data helpers (no torch), and, unlike multiprocessing's
spawn or forkserver, never re-run the caller's main script (a script without an `if __name__ ...` guard is
safe), and unlike fork never inherit a half-held lock from the caller's threads.
"""

from __future__ import annotations

import io
import json
import os
import selectors
import subprocess
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
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
    seconds: float = 0.0
    worker_peak_rss_kb: int = 0  # largest peak resident set of a decoding process (VmHWM; 0 where unknown)


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


def peak_rss_kb() -> int:
    """This process's peak resident set in KB (VmHWM: counted from its own start, unlike ru_maxrss after spawn)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def decode_chunk(chunk: _Chunk) -> tuple[list[int], list[int], dict[int, str], int]:
    """Decode `chunk.rows` and write them into the pixel file; returns (rows, their CRC32s, errors by row,
    this process's peak RSS in KB).

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
    return chunk.rows, crcs, bad, peak_rss_kb()


def _chunks(pixels_path: Path, offset: int, policy: DecodePolicy, locations: Sequence[str],
            size: int) -> Iterator[_Chunk]:
    for start in range(0, len(locations), size):
        stop = min(start + size, len(locations))
        yield _Chunk(str(pixels_path), offset, policy.to_dict(), list(range(start, stop)), list(locations[start:stop]))


class _Workers:
    """`n` worker subprocesses, each given at most `depth` chunks at a time; replies are read as they come."""

    def __init__(self, n: int, depth: int = 2) -> None:
        package_root = str(Path(__file__).resolve().parents[2])  # the folder holding `taskdistill/`
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                                           if p)}
        self.procs: list[subprocess.Popen] = []
        try:
            for _ in range(n):
                self.procs.append(subprocess.Popen([sys.executable, "-m", "taskdistill.data.store_decode"], env=env,
                                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0))
        except OSError:
            for p in self.procs:
                p.kill()
                p.wait()
            raise
        self.depth = depth
        self.busy = [0] * n
        self.pending_bytes = [bytearray() for _ in range(n)]  # what each worker wrote after its last full line
        self.selector = selectors.DefaultSelector()
        for i, p in enumerate(self.procs):
            self.selector.register(p.stdout, selectors.EVENT_READ, i)  # type: ignore[arg-type]

    def free(self) -> int | None:
        """A worker with room for another chunk, or None."""
        i = min(range(len(self.procs)), key=lambda j: self.busy[j])
        return i if self.busy[i] < self.depth else None

    def send(self, i: int, chunk: _Chunk) -> None:
        try:
            self.procs[i].stdin.write((json.dumps(asdict(chunk)) + "\n").encode())  # type: ignore[union-attr]
            self.procs[i].stdin.flush()  # type: ignore[union-attr]
        except BrokenPipeError:
            code = self.procs[i].wait()
            raise DataError(f"an image decoding worker exited unexpectedly (exit code {code}); its error is "
                            f"above") from None
        self.busy[i] += 1

    def replies(self) -> Iterator[tuple[list[int], list[int], dict[int, str], int]]:
        """Replies that are ready (waits for at least one); raises if a worker failed or died.

        Reads the pipes' raw descriptors and splits lines here: a buffered `readline` could pull two replies
        into Python's buffer and leave the second there, unseen by `select`, waiting forever."""
        for key, _ in self.selector.select():
            i = key.data
            data = os.read(self.procs[i].stdout.fileno(), 1 << 16)  # type: ignore[union-attr]
            if not data:
                code = self.procs[i].wait()
                raise DataError(f"an image decoding worker exited unexpectedly (exit code {code}); its error is above")
            self.pending_bytes[i] += data
            while b"\n" in self.pending_bytes[i]:
                line, _, rest = bytes(self.pending_bytes[i]).partition(b"\n")
                self.pending_bytes[i] = bytearray(rest)
                reply = json.loads(line)
                if "error" in reply:
                    raise OSError(reply["errno"], reply["error"])
                self.busy[i] -= 1
                yield reply["rows"], reply["crcs"], {int(k): v for k, v in reply["bad"].items()}, reply["rss_kb"]

    @property
    def pending(self) -> int:
        return sum(self.busy)

    def close(self) -> None:
        self.selector.close()
        for p in self.procs:
            try:
                p.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()  # type: ignore[union-attr]


def decode_into(pixels_path: Path, offset: int, policy: DecodePolicy, locations: Sequence[str], workers: int,
                desc: str, progress: bool = True) -> DecodeResult:
    """Decode every location into row i of the pixel file (which must exist at its full size)."""
    n = len(locations)
    result = DecodeResult(crc32=np.zeros(n, dtype=np.uint32))
    line = ProgressLine(n, desc, enabled=progress)

    def take(rows: list[int], crcs: list[int], bad: dict[int, str], rss_kb: int) -> None:
        result.crc32[rows] = crcs
        result.bad.update(bad)
        result.worker_peak_rss_kb = max(result.worker_peak_rss_kb, rss_kb)
        line.update(len(rows))

    workers = max(1, min(workers, n // 64 or 1))
    if workers == 1 or n < INLINE_BELOW:
        for chunk in _chunks(pixels_path, offset, policy, locations, 256):
            take(*decode_chunk(chunk))
        result.seconds = line.close()
        return result
    todo = _chunks(pixels_path, offset, policy, locations, max(16, min(256, n // (workers * 8))))
    pool = _Workers(workers)
    try:
        chunk = next(todo, None)
        while chunk is not None or pool.pending:
            while chunk is not None and (i := pool.free()) is not None:
                pool.send(i, chunk)
                chunk = next(todo, None)
            for reply in pool.replies():
                take(*reply)
    finally:
        pool.close()
    result.seconds = line.close()
    return result


def _worker_main() -> int:
    """A decoding worker: one JSON chunk per stdin line in, one JSON reply per stdout line out."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the reply pipe
    try:
        for raw in sys.stdin.buffer:
            fields: dict[str, Any] = json.loads(raw)
            try:
                rows, crcs, bad, rss = decode_chunk(_Chunk(**fields))
                reply: dict[str, Any] = {"rows": rows, "crcs": crcs, "bad": {str(k): v for k, v in bad.items()},
                                         "rss_kb": rss}
            except OSError as e:  # a failed write (disk full): the parent removes the partial store
                reply = {"error": str(e), "errno": e.errno}
            out.write((json.dumps(reply) + "\n").encode())
            out.flush()
            if "error" in reply:
                return 1
    except (KeyboardInterrupt, BrokenPipeError):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
