"""Query-balanced curation over a clip-retrieval pool of any size: only the shortlists are ever in memory.

1. shortlists: each query's `k = 4 * quota + 64` nearest pool rows (the same `k` as `curate.select`), from the
   on-disk IVF-PQ index re-ranked exactly (`ondisk_index.shortlist`), or by an exact streaming scan (`exact_topk`)
2. the union U of the shortlists (at most Q * k rows) is read once from the memory-mapped pool as float16
3. leakage guard on U only (`dedup.guard_hits`: the rule of `curate.leakage_flags`, O(|U| * guard))
4. `curate._balanced_pick` round robin with `dedup.IndexedDeduper`, on U-local row numbers
5. a shortfall is filled in best-match order over U (exact for every row scoring above the lowest k-th shortlist
   score: any row above it is in some shortlist)
Memory: O(Q * k * D) for U, independent of the pool size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from taskdistill.errors import ConfigError
from taskdistill.progress import ProgressLine
from taskdistill.retrieval.clip_layout import ClipPool
from taskdistill.retrieval.dedup import CachedRows, IndexedDeduper, guard_hits
from taskdistill.retrieval.index import require_faiss
from taskdistill.retrieval.ondisk_index import OnDiskIndex, shortlist
from taskdistill.retrieval.picking import (
    DEFAULT_RULE,
    DupRule,
    GuardSet,
    Queries,
    balanced_pick,
    ordered_pick,
    quotas,
)

READ_ROWS = 131_072


@dataclass
class WebSelection:
    """Curated pool rows `[n]` in pick order with their exact cosine `[n]` and the picking query (-1 = filled
    from best matches), plus what happened on the way and the seconds per step."""

    rows: np.ndarray
    scores: np.ndarray
    query: np.ndarray
    candidates: int
    guard_dropped: int
    guard_examples: list[tuple[int, int]]
    duplicates_rejected: int
    filled_from_best_matches: int
    seconds: dict[str, float] = field(default_factory=dict)


def exact_topk(pool: ClipPool, queries: np.ndarray, k: int, chunk: int = READ_ROWS,
               progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-`k` cosines `[Q, k]` and pool rows `[Q, k]` by one streaming scan of the pool (the baseline)."""
    faiss = require_faiss()
    q = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, pool.n)
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_r = np.zeros((len(q), 0), np.int64)
    bar = ProgressLine(pool.n, "exact scan", "vec", enabled=progress)
    for c0, x in pool.chunks(chunk):
        flat = faiss.IndexFlatIP(pool.dim)
        flat.add(x)
        s, r = flat.search(q, min(k, len(x)))
        s, r = np.concatenate([best_s, s], 1), np.concatenate([best_r, r + c0], 1)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_r = np.take_along_axis(s, top, 1), np.take_along_axis(r, top, 1)
        bar.update(len(x))
    bar.close()
    return best_s, best_r


def curate_pool(pool: ClipPool, queries: Queries, n: int, index: OnDiskIndex | None, guard: GuardSet | None = None,
                leak_rule: DupRule = DEFAULT_RULE, dedup_rule: DupRule | None = DEFAULT_RULE, rerank: int = 2,
                progress: bool = True) -> WebSelection:
    """Pick about n / Q pool rows per query (see the module doc); `index=None` searches exactly."""
    if n <= 0:
        raise ConfigError(f"--n must be positive, got {n}")
    if len(queries) == 0:
        raise ConfigError("query-balanced curation needs query images (the config's labeled images)")
    if queries.vectors.shape[1] != pool.dim:
        raise ConfigError(f"queries are {queries.vectors.shape[1]}-d but the pool '{pool.root}' is {pool.dim}-d; "
                          f"embed them with the pool's encoder")
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    quota = quotas(n, len(queries))
    k = min(pool.n, 4 * max(quota) + 64)
    if index is None:
        scores, rows = exact_topk(pool, queries.vectors, k, progress=progress)
    else:
        scores, rows = shortlist(index, pool, queries.vectors, k, rerank)
    seconds["search"] = time.perf_counter() - t

    t = time.perf_counter()
    universe = np.unique(rows[rows >= 0])
    vecs = np.empty((len(universe), pool.dim), np.float16)
    for c0 in range(0, len(universe), READ_ROWS):
        vecs[c0:c0 + READ_ROWS] = pool.vectors(universe[c0:c0 + READ_ROWS])
    local = np.where(rows >= 0, np.searchsorted(universe, np.maximum(rows, 0)), -1)
    seconds["read_candidates"] = time.perf_counter() - t

    t = time.perf_counter()
    eligible = np.ones(len(universe), bool)
    examples: list[tuple[int, int]] = []
    if guard is not None and len(guard.ids):
        flags, match = np.zeros(len(universe), bool), np.full(len(universe), -1, np.int64)
        for c0 in range(0, len(universe), READ_ROWS):
            f, m, _ = guard_hits(vecs[c0:c0 + READ_ROWS].astype(np.float32), None, guard, leak_rule)
            flags[c0:c0 + len(f)], match[c0:c0 + len(f)] = f, m
        eligible &= ~flags
        examples = [(int(universe[i]), int(match[i])) for i in np.flatnonzero(flags)[:20]]
    seconds["leakage_guard"] = time.perf_counter() - t

    t = time.perf_counter()
    source = CachedRows(np.arange(len(universe)), vecs)
    dedup = IndexedDeduper(source, dedup_rule, n)
    taken = np.zeros(len(universe), bool)
    picked: list[int] = []
    picked_s: list[float] = []
    picked_q: list[int] = []

    def on_pick(r: int, q: int, s: float) -> None:
        picked.append(r)
        picked_s.append(s)
        picked_q.append(q)

    balanced_pick(list(local), list(scores), quota, eligible, taken, dedup, on_pick)
    before = len(picked)
    if len(picked) < n:
        best = np.concatenate([(vecs[c0:c0 + READ_ROWS].astype(np.float32) @ queries.vectors.T).max(1)
                               for c0 in range(0, len(universe), READ_ROWS)])
        ordered_pick(np.argsort(-best, kind="stable"), n, eligible, taken, dedup,
                      lambda r: on_pick(r, -1, float(best[r])))
    seconds["select"] = time.perf_counter() - t
    return WebSelection(rows=universe[np.asarray(picked, dtype=np.int64)], scores=np.asarray(picked_s, np.float32),
                        query=np.asarray(picked_q, np.int64), candidates=len(universe),
                        guard_dropped=int((~eligible).sum()), guard_examples=examples,
                        duplicates_rejected=dedup.rejected, filled_from_best_matches=len(picked) - before,
                        seconds=seconds)
