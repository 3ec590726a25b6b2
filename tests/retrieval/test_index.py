"""The index rule, exact and approximate search, and the save/load round trip."""

from __future__ import annotations

import json
from pathlib import Path

import faiss  # noqa: E402,F401  (the test extra installs it: a missing install must fail, not skip)
import numpy as np
import pytest

from taskdistill.errors import ConfigError  # noqa: E402
from taskdistill.retrieval.index import VectorIndex, build_index, choose_index  # noqa: E402
from tests.retrieval.helpers import unit  # noqa: E402


def clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return unit(centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, d)))


def test_rule_picks_the_index_by_size() -> None:
    assert choose_index(99_999, 64).kind == "flat"
    assert choose_index(100_000, 64).kind == "hnsw"
    ivf = choose_index(1_000_000, 256)
    assert ivf.kind == "ivf-flat" and ivf.params["nlist"] == 1024 and ivf.params["nprobe"] == 32
    pq = choose_index(20_000_000, 256)
    assert pq.kind == "ivf-pq" and pq.params["m"] == 32 and pq.params["nbits"] == 8
    assert choose_index(10, 8, "ivf-flat", nprobe=3).params["nprobe"] == 3
    with pytest.raises(ConfigError, match="do not apply to a 'flat' index"):
        choose_index(10, 8, "flat", nprobe=3)
    with pytest.raises(ConfigError, match="unknown index kind 'annoy'"):
        choose_index(10, 8, "annoy")


def test_flat_search_is_exact_cosine() -> None:
    x = clustered(500, 16, 5, seed=0)
    q = clustered(7, 16, 5, seed=1)
    scores, rows = build_index(x).search(q, 5)
    sims = q @ x.T
    expected = np.argsort(-sims, axis=1)[:, :5]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, expected, 1), atol=1e-5)


@pytest.mark.parametrize("kind,overrides", [("flat", {}), ("ivf-flat", {"nlist": 16, "nprobe": 4}),
                                            ("hnsw", {"ef_search": 32})])
def test_save_load_round_trip(tmp_path: Path, kind: str, overrides: dict) -> None:
    x = clustered(2000, 16, 20, seed=0)
    q = clustered(50, 16, 20, seed=1)
    index = build_index(x, kind, fingerprint="emb-v1", **overrides)
    before = index.search(q, 10)
    index.save(tmp_path / "pool.faiss")
    side = json.loads((tmp_path / "pool.faiss.json").read_text())
    assert side["kind"] == kind and side["n"] == 2000 and side["dim"] == 16 and side["fingerprint"] == "emb-v1"
    loaded = VectorIndex.load(tmp_path / "pool.faiss")
    assert loaded.kind == kind and loaded.choice.params == index.choice.params and loaded.fingerprint == "emb-v1"
    after = loaded.search(q, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], atol=1e-6)
    assert not list(tmp_path.glob(".*.tmp"))


def test_approximate_index_recall_against_exact() -> None:
    x = clustered(4000, 32, 40, seed=0)
    q = clustered(100, 32, 40, seed=2)
    _, exact = build_index(x, "flat").search(q, 10)
    for kind, params in (("ivf-flat", {"nlist": 32, "nprobe": 8}), ("hnsw", {})):
        _, approx = build_index(x, kind, **params).search(q, 10)
        recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
        assert recall >= 0.9, (kind, recall)
    _, one_probe = build_index(x, "ivf-flat", nlist=64, nprobe=1).search(q, 10)
    low = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(one_probe, exact, strict=True)])
    assert low < 0.99  # nprobe matters: one list of 64 misses neighbours


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no saved index at"):
        VectorIndex.load(tmp_path / "none.faiss")
    with pytest.raises(ConfigError, match="non-empty"):
        build_index(np.zeros((0, 4), np.float32))
