"""The O(picks x k) deduplicator gives the quadratic one's answers, and `select` the same picks (issue 22)."""

from __future__ import annotations

import numpy as np
import pytest

import taskdistill.retrieval.curate as curate_mod
import taskdistill.retrieval.dedup as dedup_mod
from taskdistill.retrieval.curate import STRATEGIES, Deduper, DupRule, Queries, select
from taskdistill.retrieval.dedup import IndexedDeduper, guard_hits
from taskdistill.retrieval.picking import GuardSet
from tests.retrieval.helpers import toy_embeddings, unit


def _u(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x)).astype(np.float32)


def _pool_with_copies(seed: int, n: int = 1500, d: int = 24, s: int = 40):
    """Clustered vectors with near-copies in embedding space, in signature space, and in both."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((12, d)))
    vecs = unit(centres[rng.integers(0, 12, n)] + 0.6 * rng.standard_normal((n, d)) / np.sqrt(d))
    sigs = unit(rng.standard_normal((n, s)))
    src = rng.choice(n, 300, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), 300, replace=False)
    kind = rng.integers(0, 3, 300)
    for a, b, k in zip(src.tolist(), dst.tolist(), kind.tolist(), strict=True):
        if k in (0, 2):  # embedding near-copy (0: pixels agree too, 2: pixels only roughly)
            vecs[b] = _u(vecs[a] + 0.15 * rng.standard_normal(d) / np.sqrt(d))
        if k == 0:
            sigs[b] = _u(sigs[a] + 0.2 * rng.standard_normal(s) / np.sqrt(s))
        if k == 1:  # an exact pixel copy, whatever the embedding says
            sigs[b] = _u(sigs[a] + 0.05 * rng.standard_normal(s) / np.sqrt(s))
        if k == 2:
            sigs[b] = _u(sigs[a] + 0.45 * rng.standard_normal(s) / np.sqrt(s))
    return toy_embeddings(vecs, signatures=sigs)


@pytest.mark.parametrize("exact_max,nprobe", [(None, 8), (16, 10_000), (16, 8), (100, 2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_indexed_deduper_answers_like_the_quadratic_one(seed: int, exact_max: int | None, nprobe: int) -> None:
    emb = _pool_with_copies(seed)
    rng = np.random.default_rng(seed + 10)
    order = rng.permutation(len(emb))
    old, new = Deduper(emb, DupRule(), 900), IndexedDeduper(emb, DupRule(), 900, exact_max=exact_max, nprobe=nprobe)
    pos = 0
    while pos < len(order):
        batch = order[pos:pos + int(rng.integers(1, 200))]
        pos += len(batch)
        np.testing.assert_array_equal(new.accept(batch), old.accept(batch))
    assert (new.count, new.rejected) == (old.count, old.rejected) and old.rejected > 50
    if exact_max == 16:
        assert new.emb is not None and new.emb.centroids is not None  # the cell path really ran


def test_without_signatures_the_embedding_clause_decides() -> None:
    class Rows:
        def __init__(self, v: np.ndarray) -> None:
            self.v = v

        def vectors(self, rows: np.ndarray) -> np.ndarray:
            return self.v[rows]

        def signatures(self, rows: np.ndarray) -> None:
            return None

    v = unit(np.array([[1, 0, 0], [1, 0.1, 0], [1, 0.5, 0], [0, 1, 0]], np.float32))
    dd = IndexedDeduper(Rows(v), DupRule(), 4)
    assert dd.accept(np.array([0, 1])).tolist() == [True, False]  # cos 0.995 >= 0.96
    assert dd.accept(np.array([2, 3])).tolist() == [True, True]  # cos 0.89: not a copy


@pytest.mark.parametrize("strategy", STRATEGIES[:3] + STRATEGIES[4:])  # text queries need an open_clip model
def test_select_picks_do_not_move(strategy: str, monkeypatch) -> None:
    """`select` with the indexed deduplicator against the quadratic one, on a pool shaped like the demo pool's
    curation (a task minority among distractors, duplicates, 5 views per labeled image)."""
    emb = _pool_with_copies(7, n=3000)
    rng = np.random.default_rng(3)
    q = Queries(unit(emb.vectors[rng.choice(3000, 60, replace=False)] + 0.1 * rng.standard_normal((60, 24))),
                np.repeat(np.arange(6), 10), [f"q{i}" for i in range(60)], [f"c{i}" for i in range(6)])
    eligible = rng.random(3000) > 0.02
    monkeypatch.setattr(dedup_mod, "EXACT_MAX", 64)  # force the cell path early
    new = select(emb, strategy, 1200, q, eligible)
    monkeypatch.setattr(curate_mod, "IndexedDeduper", lambda e, rule, n: Deduper(e, rule, n))
    old = select(emb, strategy, 1200, q, eligible)
    assert new.rows == old.rows and new.queries == old.queries and new.summary == old.summary
    assert new.summary["duplicates_rejected"] > 0


def test_guard_hits_on_rows_matches_the_pool_wide_flags() -> None:
    emb = _pool_with_copies(4, n=800)
    g_rows = np.arange(0, 800, 20)
    guard = GuardSet(emb.vectors[g_rows], emb.signatures[g_rows], [f"g{i}" for i in g_rows.tolist()])
    flags, match, reason = curate_mod.leakage_flags(emb, guard, DupRule())
    rows = np.random.default_rng(0).choice(800, 300, replace=False)
    f2, m2, r2 = guard_hits(emb.vectors[rows], emb.signatures[rows], guard, DupRule())
    np.testing.assert_array_equal(f2, flags[rows])
    np.testing.assert_array_equal(m2, match[rows])
    np.testing.assert_array_equal(r2, reason[rows])
    assert flags[g_rows].all() and flags.sum() > len(g_rows)


def test_high_dimensional_copies_just_above_the_threshold_are_caught_in_any_cell() -> None:
    """Isotropic 512-d rows (cells are wide) with copies at cosine 0.9605-0.965 to a 0.96 threshold: a copy
    whose original was filed in a cell far from the copy's nearest centroids must still be found (the cell
    radii bound which cells to search; a fixed nprobe missed such pairs)."""
    rng = np.random.default_rng(0)
    n, d = 3000, 512
    vecs = unit(rng.standard_normal((n, d)))
    src = rng.choice(n, 600, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), 600, replace=False)
    for a, b in zip(src.tolist(), dst.tolist(), strict=True):
        target = rng.uniform(0.9605, 0.965)
        noise = rng.standard_normal(d)
        noise -= (noise @ vecs[a]) * vecs[a]
        noise /= np.linalg.norm(noise)
        vecs[b] = (target * vecs[a] + np.sqrt(1 - target**2) * noise).astype(np.float32)
    emb = toy_embeddings(vecs, signatures=vecs)  # pixels agree wherever embeddings do: the embedding clause decides
    rule = DupRule()
    order = rng.permutation(n)
    old, new = Deduper(emb, rule, n), IndexedDeduper(emb, rule, n, exact_max=64, nprobe=1)
    for pos in range(0, n, 250):
        batch = order[pos:pos + 250]
        np.testing.assert_array_equal(new.accept(batch), old.accept(batch))
    assert old.rejected > 300 and new.emb is not None and new.emb.centroids is not None
