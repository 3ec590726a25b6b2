"""An IVF-PQ index of a clip-retrieval pool, built in one streaming pass with its inverted lists on disk.

Folder layout (`DIR/`, by default `POOL/taskdistill-index/`):
    trained.index + trained.json     the trained coarse quantiser and PQ codebooks (empty index), saved once
                                     and reused by later builds with the same parameters (a grown pool, a rerun)
    blocks/block-00000.index ...     one index per `chunk_rows` pool rows, written atomically: a build that
                                     stops resumes at the first missing block; removed after the merge
    merged/ivfpq.index + ivfpq.ivfdata + index.json
                                     the searchable index: faiss `OnDiskInvertedLists` (memory-mapped codes and
                                     ids), built in a temporary folder and renamed into place
Memory: one chunk of float32 vectors plus the touched inverted lists (`m + 8` bytes per vector on disk).
Search returns approximate scores; `shortlist` re-ranks `rerank * k` candidates exactly from the pool's
memory-mapped vectors, so the scores that curation sees are exact cosines.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from taskdistill.atomic import atomic_path, write_json
from taskdistill.errors import ConfigError
from taskdistill.progress import ProgressLine
from taskdistill.retrieval.clip_layout import ClipPool
from taskdistill.retrieval.index import require_faiss

FORMAT = "taskdistill-ondisk-ivfpq/1"
DEFAULT_DIR = "taskdistill-index"
KMEANS_ITERATIONS = 10  # coarse and PQ k-means (faiss's default 25 took 2 of the 10 minutes at 10^7 rows)


@dataclass(frozen=True)
class IvfPqParams:
    """IVF-PQ settings: `nlist` cells, `m` sub-quantisers of `nbits` bits (`m` bytes a vector), `nprobe` cells
    searched, `train_size` training rows, `chunk_rows` rows per streamed block, k-means `seed`."""

    nlist: int
    m: int
    nbits: int
    nprobe: int
    train_size: int
    chunk_rows: int = 131_072
    seed: int = 0

    def trained_key(self, dim: int) -> dict[str, Any]:
        """What the trained quantiser depends on (not nprobe or chunking)."""
        return {"dim": dim, "nlist": self.nlist, "m": self.m, "nbits": self.nbits, "train_size": self.train_size,
                "seed": self.seed, "niter": KMEANS_ITERATIONS}


def _pow2(x: float) -> int:
    return int(2 ** max(0, round(math.log2(max(1.0, x)))))


def ondisk_params(n: int, dim: int, **overrides: Any) -> IvfPqParams:
    """Defaults for `n` vectors of width `dim`: nlist ~ sqrt(N)/4 (a power of two: 256 at 10^6, 1024 at 10^7;
    the coarse assignment, N * nlist * D multiply-adds, dominates a CPU build), D/8 one-byte sub-quantisers,
    nprobe = nlist/16, k-means on 64 * nlist rows."""
    nlist = max(1, min(_pow2(math.sqrt(n) / 4), n // 39 or 1))
    m = next(m for m in (dim // 8, dim // 4, dim // 2, dim, 1) if m >= 1 and dim % m == 0)
    nbits = 8 if n >= 39 * 256 else max(1, min(8, int(math.log2(max(2, n // 39)))))
    params = IvfPqParams(nlist=nlist, m=m, nbits=nbits, nprobe=max(1, nlist // 16),
                         train_size=min(n, max(64 * nlist, 256 * 40)))
    unknown = sorted(set(overrides) - set(asdict(params)))
    if unknown:
        raise ConfigError(f"on-disk index parameter(s) {unknown} are unknown; it takes {sorted(asdict(params))}")
    params = replace(params, **{k: int(v) for k, v in overrides.items() if v is not None})
    if dim % params.m:
        raise ConfigError(f"--pq-m {params.m} must divide the embedding width {dim}")
    return params


class OnDiskIndex:
    """A merged on-disk IVF-PQ index over pool rows; `search` gives approximate cosines and pool rows."""

    def __init__(self, folder: Path, index: Any, params: IvfPqParams, meta: dict[str, Any]) -> None:
        self.folder, self.index, self.params, self.meta = folder, index, params, meta
        self.set_nprobe(params.nprobe)

    @property
    def n(self) -> int:
        return int(self.index.ntotal)

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    def set_nprobe(self, nprobe: int) -> None:
        require_faiss().extract_index_ivf(self.index).nprobe = int(nprobe)
        self.params = replace(self.params, nprobe=int(nprobe))

    def release(self) -> None:
        """Hand the inverted-list pages read so far back to the page cache (`MADV_DONTNEED` on the memory-mapped
        `.ivfdata`), so the resident set stays at one query batch's lists whatever the index size."""
        faiss = require_faiss()
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(self.index).invlists)
        if isinstance(lists, faiss.OnDiskInvertedLists) and int(lists.totsize) > 0:
            ctypes.CDLL(None).madvise(ctypes.c_void_p(int(lists.ptr)), ctypes.c_size_t(int(lists.totsize)), 4)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Queries `[Q, D]` -> approximate (scores `[Q, k]`, pool rows `[Q, k]`, -1 where none)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.index.d:
            raise ConfigError(f"queries of shape {q.shape} do not fit an index of width {self.index.d}")
        return self.index.search(q, max(1, min(int(k), self.n)))

    @classmethod
    def load(cls, folder: str | Path) -> OnDiskIndex:
        faiss = require_faiss()
        folder = Path(folder)
        side = folder / "merged" / "index.json"
        if not side.is_file():
            raise ConfigError(f"no on-disk index in '{folder}' (no merged/index.json); build it with "
                              f"`taskdistill curate POOL ...` or `build_ondisk_index`")
        meta = json.loads(side.read_text())
        if meta.get("format") != FORMAT:
            raise ConfigError(f"'{side}' is not a {FORMAT} file")
        with _stdout_to_stderr():  # faiss prints where it found the .ivfdata file
            index = faiss.read_index(str(folder / "merged" / "ivfpq.index"), faiss.IO_FLAG_ONDISK_SAME_DIR)
        if int(index.ntotal) != meta["n"]:
            raise ConfigError(f"on-disk index '{folder}' holds {index.ntotal} vectors, its sidecar says {meta['n']}; "
                              f"delete the folder and rebuild")
        return cls(folder, index, IvfPqParams(**meta["params"]), meta)


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what C++ code prints to stdout to stderr instead (keeps JSON on stdout clean)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _train(pool: ClipPool, folder: Path, params: IvfPqParams, progress: bool, fingerprint: str) -> Any:
    """The trained empty index: loaded from `trained.index` when its key matches, else trained and saved."""
    faiss = require_faiss()
    # the quantiser is the pool's own: its key holds the pool's fingerprint and the k-means iterations
    key = {"params": params.trained_key(pool.dim), "pool": fingerprint, "niter": KMEANS_ITERATIONS}
    path, side = folder / "trained.index", folder / "trained.json"
    if path.is_file() and side.is_file() and json.loads(side.read_text()).get("key") == key:
        index = faiss.read_index(str(path))
        if (index.d, index.nlist, index.pq.M, index.pq.nbits) == (pool.dim, params.nlist, params.m, params.nbits):
            return index
    side.unlink(missing_ok=True)  # the record goes first: a crash before the new one leaves no stale match
    rows = np.sort(np.random.default_rng(params.seed).choice(pool.n, size=params.train_size, replace=False))
    x = np.concatenate([pool.vectors(rows[i:i + 65_536]) for i in range(0, len(rows), 65_536)])
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(pool.dim), pool.dim, params.nlist, params.m, params.nbits,
                             faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = params.seed
    index.cp.niter = index.pq.cp.niter = KMEANS_ITERATIONS
    bar = ProgressLine(len(x), f"train IVF{params.nlist},PQ{params.m} on", "vec", enabled=progress)
    index.train(x)
    bar.update(len(x))
    bar.close()
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    write_json(side, {"format": FORMAT, "key": key, "trained_on": key["pool"],
                      "index_bytes": path.stat().st_size, "index_mtime_ns": path.stat().st_mtime_ns})
    return index


def build_ondisk_index(pool: ClipPool, folder: str | Path, params: IvfPqParams, progress: bool = True,
                       force: bool = False) -> tuple[OnDiskIndex, bool]:
    """The pool's on-disk index in `folder`: loaded when one was built over the same pool with the same
    parameters, else built (resuming finished blocks). Returns (index, loaded_from_disk)."""
    faiss = require_faiss()
    from faiss.contrib.ondisk import merge_ondisk

    folder = Path(folder)
    fingerprint = pool.fingerprint()
    build_key = {**asdict(params), "nprobe": None, "fingerprint": fingerprint, "n": pool.n, "dim": pool.dim}
    if not force and (folder / "merged" / "index.json").is_file():
        try:
            idx = OnDiskIndex.load(folder)
        except ConfigError:
            idx = None
        stored = {k: v for k, v in (idx.meta.get("build_key") or {}).items() if k != "quantiser"} if idx else None
        if idx is not None and stored == build_key:
            idx.set_nprobe(params.nprobe)
            return idx, True
    for stale in folder.glob(".merged-tmp-*"):  # left by a merge that was killed
        shutil.rmtree(stale, ignore_errors=True)
    trained = _train(pool, folder, params, progress, fingerprint)
    side = json.loads((folder / "trained.json").read_text())
    # blocks encoded with another quantiser must not be merged with this one
    build_key = {**build_key, "quantiser": [side["index_bytes"], side["index_mtime_ns"]]}
    blocks = folder / "blocks"
    stamp = blocks / "blocks.json"
    if force or not stamp.is_file() or json.loads(stamp.read_text()) != build_key:
        shutil.rmtree(blocks, ignore_errors=True)
        write_json(stamp, build_key)
    names = []
    bar = ProgressLine(pool.n, "index pool (IVF-PQ, streamed)", "vec", enabled=progress)
    for b, c0 in enumerate(range(0, pool.n, params.chunk_rows)):
        path = blocks / f"block-{b:05d}.index"
        names.append(str(path))
        hi = min(c0 + params.chunk_rows, pool.n)
        if not path.is_file():
            block = faiss.clone_index(trained)
            block.add_with_ids(pool.vectors(np.arange(c0, hi)), np.arange(c0, hi, dtype=np.int64))
            with atomic_path(path) as tmp:
                faiss.write_index(block, str(tmp))
            del block
        bar.update(hi - c0)
    bar.close()
    tmp_dir = folder / f".merged-tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    try:
        empty = faiss.clone_index(trained)
        with _stdout_to_stderr():
            merge_ondisk(empty, names, str(tmp_dir / "ivfpq.ivfdata"))
        faiss.write_index(empty, str(tmp_dir / "ivfpq.index"))
        del empty
        write_json(tmp_dir / "index.json", {"format": FORMAT, "n": pool.n, "dim": pool.dim, "params": asdict(params),
                                            "fingerprint": fingerprint, "build_key": build_key, "pool": str(pool.root)})
        shutil.rmtree(folder / "merged", ignore_errors=True)
        os.replace(tmp_dir, folder / "merged")
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    shutil.rmtree(blocks, ignore_errors=True)
    idx = OnDiskIndex.load(folder)
    idx.set_nprobe(params.nprobe)
    return idx, False


def shortlist(index: OnDiskIndex, pool: ClipPool, queries: np.ndarray, k: int, rerank: int = 2,
              batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-`k` per query among the index's `rerank * k` approximate candidates: the candidates' vectors
    are read from the memory-mapped pool and scored exactly. Returns (cosines `[Q, k]` descending, rows `[Q, k]`,
    -1 / -inf where fewer)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(int(k), pool.n))
    out_s = np.full((len(q), k), -np.inf, np.float32)
    out_r = np.full((len(q), k), -1, np.int64)
    # at most 2^21 candidate rows read per batch (4 GB at 512-d float32): fewer queries per batch when k is large
    batch = max(1, min(batch, (1 << 21) // max(1, rerank * k)))
    for b0 in range(0, len(q), batch):
        qb = q[b0:b0 + batch]
        _, cand = index.search(qb, max(k, rerank * k))
        index.release()
        uniq, inv = np.unique(cand, return_inverse=True)
        inv = inv.reshape(cand.shape)
        valid = uniq >= 0
        vecs = np.zeros((len(uniq), pool.dim), np.float32)
        vecs[valid] = pool.vectors(uniq[valid])
        exact = _pair_scores(qb, vecs, inv)
        exact[cand < 0] = -np.inf
        top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        out_s[b0:b0 + len(qb), :top.shape[1]] = np.take_along_axis(exact, top, 1)
        out_r[b0:b0 + len(qb), :top.shape[1]] = np.take_along_axis(cand, top, 1)
    return out_s, np.where(np.isfinite(out_s), out_r, -1)


def _pair_scores(q: np.ndarray, vecs: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """Cosines `[Q, K]` of each query with its candidates (`inv [Q, K]` rows of `vecs [U, D]`)."""
    return np.stack([vecs[inv[i]] @ q[i] for i in range(len(q))])
