"""Web-scale pools in the clip-retrieval layout: precomputed embeddings, memory-mapped, with parquet metadata.

Folder layout (what `clip-retrieval inference` writes, e.g. for LAION):
    img_emb/img_emb_0.npy ...          `[n_p, D]` float16 / float32 unit-norm rows, one file per part
    metadata/metadata_0.parquet ...    one row per embedding row, same order (e.g. `key`, `url`, `caption`,
                                       `image_path`); read one column at a time, never whole
    encoder.json (optional)            {"encoder": NAME, "pretrained": bool, "dim": D}: clip-retrieval does not
                                       record its model, so it is named here (taskdistill writes it) or by --encoder
Parts are ordered by their number (img_emb_10 after img_emb_9); pool row r is row r - offsets[p] of part p.
Nothing is loaded whole: parts are `mmap`ed; a scan slices consecutive rows and hands the pages back afterwards
(`MADV_DONTNEED`), scattered rows are read with `pread` (no mapping), so the resident set stays at one chunk.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from taskdistill.errors import ConfigError, DataError

EMB_DIR, META_DIR, ENCODER_FILE = "img_emb", "metadata", "encoder.json"
_PART = re.compile(r"^img_emb_(\d+)\.npy$")


def require_pyarrow() -> ModuleType:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("clip-retrieval pools need pyarrow to read their parquet metadata; install it with "
                          "`pip install taskdistill[retrieval]` (or `pip install pyarrow==26.0.1`)") from None
    return pq


def is_clip_layout(path: str | Path) -> bool:
    """True for a folder holding `img_emb/img_emb_*.npy` (the clip-retrieval embedding layout)."""
    p = Path(path)
    return p.is_dir() and (p / EMB_DIR).is_dir() and any(_PART.match(f.name) for f in (p / EMB_DIR).iterdir())


@dataclass(frozen=True)
class EncoderRecord:
    """Which encoder made the pool's embeddings, from `encoder.json`."""

    encoder: str
    pretrained: bool
    dim: int
    spec: dict[str, Any] | None = None  # a full `EncoderSpec` dict (input size, seed, checkpoint) when known


class _Part:
    """One `img_emb_<i>.npy`, memory-mapped read-only: `array [n, D]`, `release()` drops its resident pages."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(f)
            except ValueError as e:
                raise DataError(f"'{path}' is not a .npy array ({e}); re-export the embeddings") from None
            offset = f.tell()
            if fortran or len(shape) != 2 or dtype not in (np.float16, np.float32):
                raise DataError(f"'{path}' holds a {dtype} array of shape {shape} (fortran={fortran}); expected "
                                f"[n, D] float16 or float32 rows")
            self.path, self.shape, self.dtype = path, (int(shape[0]), int(shape[1])), np.dtype(dtype)
            size = self.shape[0] * self.shape[1] * self.dtype.itemsize
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.offset, self.row_bytes = offset, self.shape[1] * self.dtype.itemsize
        self.array = (np.frombuffer(self._mm, self.dtype, self.shape[0] * self.shape[1], offset).reshape(self.shape)
                      if self._mm is not None else np.zeros(self.shape, self.dtype))

    def release(self) -> None:
        if self._mm is not None:
            self._mm.madvise(mmap.MADV_DONTNEED)

    def rows(self, local: np.ndarray) -> np.ndarray:
        """Sorted local rows `[B]` -> `[B, D]` in the file's dtype. A contiguous run is sliced from the mapping;
        scattered rows are read with `pread` instead, because touching one row of a mapping maps its
        neighbours too (the kernel's fault-around: ~64 KB per 1 KB row), which would swell the resident set."""
        if len(local) == 0:
            return np.zeros((0, self.shape[1]), self.dtype)
        if bool(np.all(np.diff(local) == 1)):  # one contiguous run (a repeated row is not one)
            block = np.array(self.array[local[0]:local[-1] + 1])
            self.release()
            return block
        out = np.empty((len(local), self.shape[1]), self.dtype)
        buf = memoryview(out).cast("B")
        starts = np.flatnonzero(np.r_[True, np.diff(local) != 1])
        ends = np.r_[starts[1:], len(local)]
        with open(self.path, "rb", buffering=0) as f:
            fd = f.fileno()
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                want = (b - a) * self.row_bytes
                got = os.preadv(fd, [buf[a * self.row_bytes:b * self.row_bytes]],
                                self.offset + int(local[a]) * self.row_bytes)
                if got != want:
                    raise DataError(f"'{self.path}' is shorter than its header says; re-export the embeddings")
        return out


class ClipPool:
    """A clip-retrieval folder: `n` rows of width `dim`, read by chunk or by row, and metadata by column."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not is_clip_layout(self.root):
            raise DataError(f"'{self.root}' is not a clip-retrieval folder: expected {EMB_DIR}/img_emb_0.npy ... "
                            f"(and {META_DIR}/metadata_0.parquet ...)")
        numbers = sorted(int(m.group(1)) for f in (self.root / EMB_DIR).iterdir() if (m := _PART.match(f.name)))
        self.parts = [_Part(self.root / EMB_DIR / f"img_emb_{i}.npy") for i in numbers]
        self.meta_paths = [self.root / META_DIR / f"metadata_{i}.parquet" for i in numbers]
        dims = {p.shape[1] for p in self.parts}
        if len(dims) != 1:
            raise DataError(f"the parts of '{self.root / EMB_DIR}' have different widths {sorted(dims)}; every "
                            f"img_emb_*.npy must come from the same encoder")
        self.dim = dims.pop()
        self.offsets = np.cumsum([0] + [p.shape[0] for p in self.parts]).astype(np.int64)
        self.n = int(self.offsets[-1])
        if self.n == 0:
            raise DataError(f"clip-retrieval folder '{self.root}' holds no embeddings")
        pq = require_pyarrow()
        for part, mp in zip(self.parts, self.meta_paths, strict=True):
            if not mp.is_file():
                raise DataError(f"'{mp}' is missing: every {part.path.name} needs its metadata part")
            rows = pq.ParquetFile(mp).metadata.num_rows
            if rows != part.shape[0]:
                raise DataError(f"'{mp}' has {rows} rows but '{part.path}' has {part.shape[0]}; they must match "
                                f"row for row (re-export the pool)")

    def __len__(self) -> int:
        return self.n

    @property
    def columns(self) -> list[str]:
        return list(require_pyarrow().ParquetFile(self.meta_paths[0]).schema_arrow.names)

    def encoder_record(self) -> EncoderRecord | None:
        path = self.root / ENCODER_FILE
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text())
            return EncoderRecord(str(d["encoder"]), bool(d.get("pretrained", False)), int(d["dim"]), d.get("spec"))
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"'{path}' must be JSON with 'encoder' and 'dim' ({e})") from None

    def fingerprint(self) -> str:
        """sha256 over part names, shapes, dtypes, file sizes, modification times, inodes and the first and last
        row of each part (a part rewritten in place, even at the same size, changes it)."""
        h = hashlib.sha256()
        for p in self.parts:
            st = p.path.stat()
            h.update(f"{p.path.name}\t{p.shape}\t{p.dtype}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ino}\n".encode())
            if p.shape[0]:
                h.update(np.ascontiguousarray(p.array[[0, -1]]).tobytes())
        self.release()
        return h.hexdigest()

    def release(self) -> None:
        """Hand the pages read so far back to the page cache (they stop counting in this process's RSS)."""
        for p in self.parts:
            p.release()

    def chunks(self, rows: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Consecutive `(first_row, vectors [b, D] float32)` of at most `rows` rows, pages released after each."""
        stop = self.n if stop is None else min(stop, self.n)
        for c0 in range(start, stop, rows):
            yield c0, self.vectors(np.arange(c0, min(c0 + rows, stop)))

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Pool rows `[B]` (any order, repeats allowed) -> float32 `[B, D]`; the touched pages are released."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.n:
            raise IndexError(f"pool rows must lie in [0, {self.n}), got {rows.min()} .. {rows.max()}")
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        part_of = np.searchsorted(self.offsets, sorted_rows, side="right") - 1
        bounds = np.searchsorted(part_of, np.arange(len(self.parts) + 1))
        for p, part in enumerate(self.parts):
            lo, hi = bounds[p], bounds[p + 1]
            if lo == hi:
                continue
            out[order[lo:hi]] = part.rows(sorted_rows[lo:hi] - self.offsets[p])
        return out

    def column(self, name: str, rows: np.ndarray | None = None) -> list[Any]:
        """Metadata column `name` for pool `rows` `[B]` (all rows when None), reading only that column and only
        the parts that hold the rows."""
        pq = require_pyarrow()
        if name not in self.columns:
            raise DataError(f"the metadata of '{self.root}' has no column '{name}'; it has {self.columns}")
        if rows is None:
            return [v for mp in self.meta_paths for v in pq.read_table(mp, columns=[name]).column(0).to_pylist()]
        rows = np.asarray(rows, dtype=np.int64)
        part_of = np.searchsorted(self.offsets, rows, side="right") - 1
        out: list[Any] = [None] * len(rows)
        for p in np.unique(part_of).tolist():
            mine = np.flatnonzero(part_of == p)
            col = pq.read_table(self.meta_paths[p], columns=[name]).column(0)
            values = col.take(rows[mine] - self.offsets[p]).to_pylist()
            for i, v in zip(mine.tolist(), values, strict=True):
                out[i] = v
        return out


def check_encoder(pool: ClipPool, encoder: str | None, dim: int | None = None) -> str:
    """The encoder name to embed queries with; a ConfigError when `encoder` or `dim` contradict the pool."""
    rec = pool.encoder_record()
    if rec is not None and rec.dim != pool.dim:
        raise ConfigError(f"'{pool.root / ENCODER_FILE}' says dim {rec.dim} but the embeddings are {pool.dim} wide; "
                          f"fix or delete {ENCODER_FILE}")
    if encoder is None:
        if rec is None:
            raise ConfigError(f"'{pool.root}' does not record its encoder ({ENCODER_FILE}); pass --encoder with the "
                              f"model that made its embeddings (e.g. open_clip:ViT-B-32/laion2b_s34b_b79k --pretrained)")
        encoder = rec.encoder
    elif rec is not None and rec.encoder != encoder:
        raise ConfigError(f"--encoder '{encoder}' is not the encoder of '{pool.root}' ('{rec.encoder}', from "
                          f"{ENCODER_FILE}); queries from another model are not comparable. Pass --encoder "
                          f"{rec.encoder}")
    if dim is not None and dim != pool.dim:
        raise ConfigError(f"the encoder '{encoder}' makes {dim}-d embeddings but the pool '{pool.root}' holds {pool.dim}-d "
                          f"ones; pass the --encoder that embedded the pool")
    return encoder


def write_clip_part(root: str | Path, part: int, vectors: np.ndarray, columns: dict[str, list[Any]]) -> None:
    """Write part `part` of a clip-retrieval folder: `img_emb_<part>.npy` `[n, D]` and its metadata columns
    (each a list of n values), each file atomically."""
    from taskdistill.atomic import atomic_path

    pq = require_pyarrow()
    import pyarrow as pa

    root = Path(root)
    bad = {k: len(v) for k, v in columns.items() if len(v) != len(vectors)}
    if bad:
        raise DataError(f"metadata columns {bad} do not have one value per embedding row ({len(vectors)})")
    with atomic_path(root / EMB_DIR / f"img_emb_{part}.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, vectors)
    with atomic_path(root / META_DIR / f"metadata_{part}.parquet") as tmp:
        pq.write_table(pa.table(columns), tmp)


def clear_pool(root: str | Path) -> None:
    """Remove a clip-retrieval folder's parts and encoder record before it is written again, so parts of an
    earlier, larger pool are not read as part of the new one; the encoder record goes first and is written
    last, so a write that dies midway leaves a pool that names no encoder (and is refused) rather than one
    that claims the old encoder."""
    root = Path(root)
    (root / ENCODER_FILE).unlink(missing_ok=True)
    for pattern in (f"{EMB_DIR}/img_emb_*.npy", f"{META_DIR}/metadata_*.parquet"):
        for old in root.glob(pattern):
            old.unlink()


def export_embeddings(emb_folder: str | Path, out: str | Path, part_rows: int = 1_000_000) -> None:
    """A `taskdistill embed` folder as a clip-retrieval folder (`image_path` = each image's location, `source`),
    with `encoder.json` naming its encoder: how a pool embedded here is curated like a web-scale one."""
    from taskdistill.atomic import write_json
    from taskdistill.retrieval.embed import load_embeddings

    emb = load_embeddings(emb_folder)
    clear_pool(out)
    for p, p0 in enumerate(range(0, len(emb), part_rows)):
        sl = slice(p0, p0 + part_rows)
        write_clip_part(out, p, emb.vectors[sl].astype(emb.meta.get("dtype", "float16")),
                        {"key": emb.ids[sl], "image_path": emb.locations[sl], "source": emb.sources[sl]})
    enc = emb.meta["encoder"]
    write_json(Path(out) / ENCODER_FILE, {"encoder": enc["name"], "pretrained": enc.get("pretrained", False),
                                          "dim": int(emb.vectors.shape[1]), "spec": enc})
