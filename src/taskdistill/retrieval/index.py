"""FAISS indexes over unit vectors `[N, D]`: cosine similarity as inner product, the index type chosen by size.

The rule (`choose_index`), for N vectors:
    N <   100,000            flat      exact `IndexFlatIP`; a full scan is still milliseconds per query
    N <   1,000,000          hnsw      `IndexHNSWFlat` (M=32, efConstruction=80, efSearch=128): no training,
                                       high recall, memory = vectors + ~M*8 bytes of graph per vector
    N <  10,000,000          ivf-flat  `IndexIVFFlat`, nlist ~ sqrt(N) (power of two), trained on <= 64*nlist
                                       samples, nprobe = nlist/32: cheaper to build than HNSW at this size
                                       (1M x 256: recall@10 0.9987 vs exact, benchmarks/retrieval_index.py)
    N >= 10,000,000          ivf-pq    `IndexIVFPQ`, nlist ~ 4*sqrt(N), D/8 sub-quantisers of 8 bits (D/8 bytes
                                       per vector instead of 4*D), nprobe = nlist/32: the vectors no longer fit
                                       in memory otherwise
Any kind can be forced; `params` override the defaults (`nlist`, `nprobe`, `m`, `ef_search`, ...).
`save`/`load` round-trip through `faiss.write_index` plus a JSON sidecar (kind, params, n, dim, fingerprint).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

from taskdistill.atomic import atomic_path, write_json
from taskdistill.errors import ConfigError

IndexKind = Literal["flat", "hnsw", "ivf-flat", "ivf-pq"]
KINDS: tuple[str, ...] = ("auto", "flat", "hnsw", "ivf-flat", "ivf-pq")
FLAT_MAX = 100_000
HNSW_MAX = 1_000_000
IVF_FLAT_MAX = 10_000_000
FORMAT = "taskdistill-index/1"


def require_faiss() -> ModuleType:
    try:
        import faiss
    except ImportError:
        raise ConfigError("retrieval needs the package faiss-cpu; install it with "
                          "`pip install taskdistill[retrieval]` (or `pip install faiss-cpu==1.15.1`)") from None
    return faiss


def _pow2(x: float) -> int:
    return int(2 ** max(0, round(math.log2(max(1.0, x)))))


@dataclass(frozen=True)
class IndexChoice:
    """An index kind and its parameters."""

    kind: IndexKind
    params: dict[str, Any] = field(default_factory=dict)


def choose_index(n: int, dim: int, kind: str = "auto", **overrides: Any) -> IndexChoice:
    """The index for `n` vectors of width `dim` (see the module doc); `kind` forces a type."""
    if kind not in KINDS:
        raise ConfigError(f"unknown index kind '{kind}'; use one of {', '.join(KINDS)}")
    if kind == "auto":
        kind = "flat" if n < FLAT_MAX else "hnsw" if n < HNSW_MAX else "ivf-flat" if n < IVF_FLAT_MAX else "ivf-pq"
    params: dict[str, Any]
    if kind == "flat":
        params = {}
    elif kind == "hnsw":
        params = {"m": 32, "ef_construction": 80, "ef_search": 128}
    elif kind == "ivf-flat":
        nlist = max(1, min(_pow2(math.sqrt(n)), n // 39 or 1))
        params = {"nlist": nlist, "nprobe": max(1, nlist // 32), "train_size": min(n, 64 * nlist)}
    else:
        nlist = max(1, min(_pow2(4 * math.sqrt(n)), n // 39 or 1))
        m = next(m for m in (dim // 8, dim // 4, dim // 2, dim, 1) if m >= 1 and dim % m == 0)
        nbits = 8 if n >= 39 * 256 else max(1, min(8, int(math.log2(max(2, n // 39)))))  # 39 samples per code
        params = {"nlist": nlist, "nprobe": max(1, nlist // 32), "m": m, "nbits": nbits,
                  "train_size": min(n, max(64 * nlist, 256 * 40))}
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise ConfigError(f"index parameter(s) {unknown} do not apply to a '{kind}' index; it takes {sorted(params)}")
    params.update(overrides)
    return IndexChoice(kind=kind, params=params)  # type: ignore[arg-type]


class VectorIndex:
    """A FAISS index of `n` unit vectors of width `dim`; `search` returns cosine scores and row ids."""

    def __init__(self, index: Any, choice: IndexChoice, fingerprint: str | None = None) -> None:
        self.index, self.choice, self.fingerprint = index, choice, fingerprint
        self.apply_search_params()

    @property
    def kind(self) -> str:
        return self.choice.kind

    @property
    def n(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def apply_search_params(self) -> None:
        p = self.choice.params
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = int(p["ef_search"])
        elif self.kind in ("ivf-flat", "ivf-pq"):
            self.index.nprobe = int(p["nprobe"])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Queries `[Q, D]` -> (scores `[Q, k]` float32 descending, rows `[Q, k]` int64, -1 where none)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ConfigError(f"queries of shape {q.shape} do not fit an index of width {self.dim}")
        k = max(1, min(int(k), self.n))
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(int(self.choice.params["ef_search"]), k)
        scores, rows = self.index.search(q, k)
        return scores, rows

    def save(self, path: str | Path) -> None:
        """Write `<path>` (faiss) and `<path>.json` (kind, params, n, dim, fingerprint), each atomically."""
        faiss = require_faiss()
        path = Path(path)
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        write_json(path.with_name(path.name + ".json"), {
            "format": FORMAT, "kind": self.kind, "params": self.choice.params, "n": self.n, "dim": self.dim,
            "fingerprint": self.fingerprint})

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        faiss = require_faiss()
        path = Path(path)
        side = path.with_name(path.name + ".json")
        if not (path.is_file() and side.is_file()):
            raise ConfigError(f"no saved index at '{path}' (needs '{path.name}' and '{side.name}')")
        meta = json.loads(side.read_text())
        if meta.get("format") != FORMAT:
            raise ConfigError(f"'{side}' is not a {FORMAT} file")
        index = faiss.read_index(str(path))
        if int(index.ntotal) != meta["n"] or int(index.d) != meta["dim"]:
            raise ConfigError(f"index '{path}' does not match its sidecar '{side}'; rebuild it")
        return cls(index, IndexChoice(kind=meta["kind"], params=dict(meta["params"])), meta.get("fingerprint"))


def build_index(vectors: np.ndarray, kind: str = "auto", seed: int = 0, fingerprint: str | None = None,
                **overrides: Any) -> VectorIndex:
    """Index unit vectors `[N, D]` for inner-product (cosine) search."""
    faiss = require_faiss()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ConfigError(f"cannot index vectors of shape {x.shape}; expected a non-empty [N, D] array")
    n, d = x.shape
    choice = choose_index(n, d, kind, **overrides)
    p = choice.params
    ip = faiss.METRIC_INNER_PRODUCT
    if choice.kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif choice.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, int(p["m"]), ip)
        index.hnsw.efConstruction = int(p["ef_construction"])
    else:
        quantizer = faiss.IndexFlatIP(d)
        if choice.kind == "ivf-flat":
            index = faiss.IndexIVFFlat(quantizer, d, int(p["nlist"]), ip)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, int(p["nlist"]), int(p["m"]), int(p["nbits"]), ip)
        index.cp.seed = seed
        train = x
        if p["train_size"] < n:
            train = x[np.sort(np.random.default_rng(seed).choice(n, size=int(p["train_size"]), replace=False))]
        index.train(train)  # faiss's Python wrapper keeps `quantizer` alive with the index
    index.add(x)
    return VectorIndex(index, choice, fingerprint)
