"""Near-duplicate removal and the leakage guard in O(picks x k): range searches instead of all-pairs products.

`IndexedDeduper` accepts candidates in order like the quadratic `curate.Deduper` (same rule, same order, same
answers) but finds a candidate's near-copies among the accepted rows by range: exact (one matrix product)
while at most `exact_max` rows are accepted, then in k-means cells of about `CELL_ROWS` accepted rows
(rebuilt each time they grow 4x). Each cell keeps its angular radius r_c (the widest angle between its
centroid and a member), and a candidate x is compared with the members of every cell whose centroid is within
arccos(threshold) + r_c of it: by the triangle inequality on angles no cell left out can hold a row at cosine
>= threshold, so the answer is exactly the quadratic one; on clustered data (near-copies, cosine >= 0.93) that is
a few cells per candidate instead of every accepted row.

Rows come from a `RowSource`: in-memory `Embeddings` (`EmbeddingRows`) or rows of a clip-retrieval pool held
as float16 (`CachedRows`). Pools without pixel signatures (clip-retrieval) use the rule's embedding clause alone:
duplicate <=> embedding cosine >= emb_threshold.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import numpy as np

from taskdistill.retrieval.blas import single_threaded_blas
from taskdistill.retrieval.index import require_faiss
from taskdistill.retrieval.picking import DupRule, GuardSet

if TYPE_CHECKING:
    from taskdistill.retrieval.embed import Embeddings

EXACT_MAX = 8192
NPROBE = 8
CELL_ROWS = 128  # kept rows per cell at full capacity
_EPS = 1e-4


class RowSource(Protocol):
    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Pool rows `[B]` -> unit embeddings `[B, D]` float32."""
        ...

    def signatures(self, rows: np.ndarray) -> np.ndarray | None:
        """Pool rows `[B]` -> pixel signatures `[B, S]` float32, or None when the pool has none."""
        ...


class EmbeddingRows:
    """A `RowSource` over an in-memory embedding folder."""

    def __init__(self, emb: Embeddings) -> None:
        self.emb = emb

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.emb.vectors[rows]

    def signatures(self, rows: np.ndarray) -> np.ndarray | None:
        return self.emb.signatures[rows]


class CachedRows:
    """A `RowSource` over a known set of pool rows `[U]` whose vectors `[U, D]` are kept as float16."""

    def __init__(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        order = np.argsort(rows, kind="stable")
        self.rows = np.asarray(rows, dtype=np.int64)[order]
        self.data = np.asarray(vectors)[order].astype(np.float16)

    def position(self, rows: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.rows, rows)
        if len(rows) and (pos.max() >= len(self.rows) or (self.rows[np.minimum(pos, len(self.rows) - 1)] != rows).any()):
            raise KeyError("rows outside the cached set were asked for")
        return pos

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.data[self.position(np.asarray(rows, dtype=np.int64))].astype(np.float32)

    def signatures(self, rows: np.ndarray) -> np.ndarray | None:
        return None


def dup_mask(rule: DupRule, emb_cos: np.ndarray, sig_cos: np.ndarray | None) -> np.ndarray:
    """`rule` on cosine arrays; without signatures the embedding clause alone (emb_cos >= emb_threshold)."""
    if sig_cos is None:
        return emb_cos >= rule.emb_threshold
    return rule(emb_cos, sig_cos)


class _KeptSpace:
    """Accepted vectors `[count, D]` in one space, with range search: an exact product while at most
    `exact_max` rows are kept, then cells of a k-means over them (rebuilt at each 4x growth) of which each
    candidate probes its `nprobe` nearest; each cell's rows are one contiguous block (BLAS products)."""

    def __init__(self, dim: int, capacity: int, exact_max: int, nprobe: int, seed: int) -> None:
        self.store = np.zeros((capacity, dim), np.float32)
        self.count, self.exact_max, self.nprobe, self.seed = 0, exact_max, nprobe, seed
        self.centroids: np.ndarray | None = None  # [nlist, D] once past exact_max
        self.cell_vecs: list[np.ndarray] = []
        self.cell_ids: list[np.ndarray] = []
        self.cell_n: list[int] = []
        self.cell_reach = np.zeros(0)  # [nlist] radians: the widest centroid-to-member angle of each cell
        self.built_at = 0

    def add(self, x: np.ndarray) -> None:
        first = self.count
        self.store[first:first + len(x)] = x
        self.count += len(x)
        if self.count > self.exact_max and (self.built_at == 0 or self.count >= 4 * self.built_at):
            self._rebuild()
        elif self.centroids is not None:
            self._file(np.arange(first, self.count))

    def _rebuild(self) -> None:
        faiss = require_faiss()
        x = self.store[:self.count]
        nlist = max(1, min(int(2 ** round(math.log2(max(1.0, len(self.store) / CELL_ROWS)))), self.count // 39))
        train = x if len(x) <= 64 * nlist else x[np.random.default_rng(self.seed).choice(len(x), 64 * nlist, False)]
        km = faiss.Kmeans(x.shape[1], nlist, niter=10, seed=self.seed, spherical=True)
        km.train(np.ascontiguousarray(train))
        self.centroids = km.centroids / np.linalg.norm(km.centroids, axis=1, keepdims=True).clip(min=1e-12)
        self.cell_reach = np.zeros(nlist)
        d = x.shape[1]
        self.cell_vecs = [np.zeros((0, d), np.float32) for _ in range(nlist)]
        self.cell_ids = [np.zeros(0, np.int64) for _ in range(nlist)]
        self.cell_n = [0] * nlist
        self._file(np.arange(self.count))
        self.built_at = self.count

    def _file(self, ids: np.ndarray) -> None:
        """Append kept rows `ids` to their nearest cell's block (blocks grow by doubling)."""
        assert self.centroids is not None
        vecs = self.store[ids]
        sims = vecs @ self.centroids.T
        cells = sims.argmax(1)
        norms = np.linalg.norm(vecs, axis=1).clip(min=1e-12)
        angles = np.arccos(np.clip(sims[np.arange(len(ids)), cells] / norms, -1.0, 1.0))
        for c in np.unique(cells).tolist():
            mine = ids[cells == c]
            self.cell_reach[c] = max(self.cell_reach[c], float(angles[cells == c].max()))
            n, cap = self.cell_n[c], len(self.cell_ids[c])
            if n + len(mine) > cap:
                new_cap = max(16, 2 * (n + len(mine)))
                vecs = np.zeros((new_cap, self.store.shape[1]), np.float32)
                vecs[:n] = self.cell_vecs[c][:n]
                idx = np.zeros(new_cap, np.int64)
                idx[:n] = self.cell_ids[c][:n]
                self.cell_vecs[c], self.cell_ids[c] = vecs, idx
            self.cell_vecs[c][n:n + len(mine)] = self.store[mine]
            self.cell_ids[c][n:n + len(mine)] = mine
            self.cell_n[c] = n + len(mine)

    def pairs(self, x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(candidate `[P]`, accepted row `[P]`, cosine `[P]`) for every pair found at >= `threshold`."""
        if self.count == 0 or len(x) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.centroids is None:  # exact: the quadratic Deduper's very product
            cos = x @ self.store[:self.count].T
            cand, kept = np.nonzero(cos >= threshold)
            return cand, kept, cos[cand, kept]
        # every cell that can hold a row within arccos(threshold) of x (triangle inequality on angles; unit rows,
        # a milliradian of slack for float16 rounding)
        norms = np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
        to_centroid = np.arccos(np.clip((x @ self.centroids.T) / norms, -1.0, 1.0))  # [B, nlist]
        reach = math.acos(min(1.0, max(-1.0, float(threshold)))) + self.cell_reach + 1e-3
        probe = to_centroid <= reach[None, :]
        out_c, out_k, out_s = [], [], []
        for c in np.flatnonzero(probe.any(0)).tolist():
            n = self.cell_n[c]
            if n == 0:
                continue
            who = np.flatnonzero(probe[:, c])
            cos = x[who] @ self.cell_vecs[c][:n].T
            i, j = np.nonzero(cos >= threshold)
            if len(i):
                out_c.append(who[i])
                out_k.append(self.cell_ids[c][j])
                out_s.append(cos[i, j])
        if not out_c:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(out_c), np.concatenate(out_k), np.concatenate(out_s)


class IndexedDeduper:
    """Accepts candidates in order, rejecting any near-duplicate of one already accepted (see the module doc).

    Same interface and answers as `curate.Deduper`: `accept(rows)`, `count`, `rejected`."""

    def __init__(self, source: RowSource | Embeddings, rule: DupRule | None, capacity: int,
                 exact_max: int | None = None, nprobe: int = NPROBE, seed: int = 0) -> None:
        in_memory = isinstance(getattr(source, "vectors", None), np.ndarray)  # an `Embeddings`, not a RowSource
        self.source: RowSource = EmbeddingRows(source) if in_memory else source  # type: ignore[arg-type]
        self.rule, self.capacity = rule, int(capacity)
        self.exact_max = EXACT_MAX if exact_max is None else exact_max
        self.nprobe, self.seed = nprobe, seed
        self.emb: _KeptSpace | None = None
        self.sig: _KeptSpace | None = None
        self.count = 0
        self.rejected = 0

    def _spaces(self, e: np.ndarray, s: np.ndarray | None) -> None:
        if self.emb is None:
            self.emb = _KeptSpace(e.shape[1], self.capacity, self.exact_max, self.nprobe, self.seed)
            if s is not None:
                self.sig = _KeptSpace(s.shape[1], self.capacity, self.exact_max, self.nprobe, self.seed)

    def accept(self, rows: np.ndarray) -> np.ndarray:
        """Candidate pool rows `[B]` (distinct) -> accepted mask `[B]`; accepted rows join the kept set."""
        with single_threaded_blas():  # many small products: BLAS thread wake-ups would dominate
            return self._accept(rows)

    def _accept(self, rows: np.ndarray) -> np.ndarray:
        ok = np.ones(len(rows), bool)
        if len(rows) == 0:
            return ok
        rows = np.asarray(rows, dtype=np.int64)
        e = np.ascontiguousarray(self.source.vectors(rows), dtype=np.float32)
        s = self.source.signatures(rows)
        s = None if s is None else np.ascontiguousarray(s, dtype=np.float32)
        self._spaces(e, s)
        assert self.emb is not None
        if self.rule is not None:
            rule = self.rule
            if self.count:
                cand, kept, _ = self.emb.pairs(e, rule.emb_threshold)
                if s is not None and self.sig is not None:
                    floor_ok = np.einsum("pd,pd->p", s[cand], self.sig.store[kept]) >= rule.sig_floor
                    ok[cand[floor_ok]] = False
                    ok[self.sig.pairs(s, rule.sig_threshold)[0]] = False
                else:
                    ok[cand] = False
            within = np.tril(dup_mask(rule, e @ e.T, None if s is None else s @ s.T), -1)  # [i, j]: j < i
            for i in np.flatnonzero(within.any(axis=1)).tolist():  # in order: j's fate is known before i's
                if ok[i] and (within[i, :i] & ok[:i]).any():
                    ok[i] = False
            self.rejected += int((~ok).sum())
        take = np.flatnonzero(ok)
        room = self.capacity - self.count
        if len(take) > room:
            ok[take[room:]] = False
            take = take[:room]
        if len(take):
            self.emb.add(e[take])
            if self.sig is not None and s is not None:
                self.sig.add(s[take])
            self.count += len(take)
        return ok


def guard_hits(vectors: np.ndarray, signatures: np.ndarray | None, guard: GuardSet, rule: DupRule, k: int = 4,
               chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which rows `vectors [B, D]` (with `signatures [B, S]`, or None) are near-copies of a guard image: the
    rule of `curate.leakage_flags`, applied to only these rows. Returns (flags `[B]`, guard row `[B]` or -1,
    reason `[B]`: 0 none, 1 pixel signature, 2 embedding (+ signature floor when there are signatures))."""
    b = len(vectors)
    flags, match, reason = np.zeros(b, bool), np.full(b, -1, np.int64), np.zeros(b, np.int8)
    if len(guard.ids) == 0 or b == 0:
        return flags, match, reason
    faiss = require_faiss()
    e_index = faiss.IndexFlatIP(guard.vectors.shape[1])
    e_index.add(np.ascontiguousarray(guard.vectors, dtype=np.float32))
    s_index = None
    if signatures is not None:
        s_index = faiss.IndexFlatIP(guard.signatures.shape[1])
        s_index.add(np.ascontiguousarray(guard.signatures, dtype=np.float32))
    k = min(k, len(guard.ids))
    for c0 in range(0, b, chunk):
        ev = np.ascontiguousarray(vectors[c0:c0 + chunk], dtype=np.float32)
        e_top, e_row = e_index.search(ev, k)
        if s_index is not None and signatures is not None:
            sv = np.ascontiguousarray(signatures[c0:c0 + chunk], dtype=np.float32)
            s_top, s_row = s_index.search(sv, 1)
            by_sig = s_top[:, 0] >= rule.sig_threshold
            pair_sig = np.einsum("bd,bkd->bk", sv, guard.signatures[e_row])
            pair_hit = (e_top >= rule.emb_threshold) & (pair_sig >= rule.sig_floor)
        else:
            s_row = np.full((len(ev), 1), -1, np.int64)
            by_sig = np.zeros(len(ev), bool)
            pair_hit = e_top >= rule.emb_threshold
        by_emb = pair_hit.any(axis=1) & ~by_sig
        sl = slice(c0, c0 + len(ev))
        flags[sl] = by_sig | by_emb
        match[sl] = np.where(by_sig, s_row[:, 0], np.where(by_emb, e_row[np.arange(len(ev)), pair_hit.argmax(1)], -1))
        reason[sl] = np.where(by_sig, 1, np.where(by_emb, 2, 0))
    return flags, match, reason
