"""Web-scale retrieval (issue 22): clip-retrieval pools, the on-disk IVF-PQ index, curation and fetching."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import faiss  # noqa: F401  (the test extra installs it: a missing install must fail, not skip)
import numpy as np
import pytest

from taskdistill.data.locations import LocationReader
from taskdistill.errors import ConfigError, DataError
from taskdistill.retrieval import fetch as fetch_mod
from taskdistill.retrieval.clip_layout import ClipPool, check_encoder, is_clip_layout, write_clip_part
from taskdistill.retrieval.fetch import fetch_members, locations_for
from taskdistill.retrieval.ondisk_index import OnDiskIndex, build_ondisk_index, ondisk_params, shortlist
from taskdistill.retrieval.picking import GuardSet, Queries
from taskdistill.retrieval.synthetic_pool import SyntheticSpec, write_synthetic_pool
from taskdistill.retrieval.transfer_set import write_manifest_rows
from taskdistill.retrieval.web_curate import curate_pool, exact_topk

SPEC = SyntheticSpec(n=6000, dim=32, classes=3, queries_per_class=4, planted_per_query=30, guard_per_query=2,
                     part_rows=2500, seed=3)


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("webpool")
    write_synthetic_pool(out, SPEC, progress=False)
    return out


def _queries(truth) -> Queries:  # noqa: ANN001 - SyntheticTruth
    return Queries(truth.queries.astype(np.float32), truth.labels, [f"q{i}" for i in range(len(truth.queries))],
                   ["a", "b", "c"])


def test_clip_layout_reads_parts_rows_and_metadata_columns(pool_dir: Path) -> None:
    pool = ClipPool(pool_dir)
    assert is_clip_layout(pool_dir) and (pool.n, pool.dim) == (6000, 32) and len(pool.parts) == 3
    parts = [np.load(pool_dir / "img_emb" / f"img_emb_{i}.npy") for i in range(3)]
    whole = np.concatenate(parts).astype(np.float32)
    rows = np.array([5999, 0, 2500, 2499, 4321, 2500])
    np.testing.assert_array_equal(pool.vectors(rows), whole[rows])
    np.testing.assert_array_equal(np.concatenate([x for _, x in pool.chunks(1700)]), whole)
    assert pool.column("key", rows) == [f"{r // 10000:05d}{r % 10000:04d}" for r in rows.tolist()]
    assert len(pool.column("key")) == 6000 and pool.columns == ["key", "caption"]
    with pytest.raises(DataError, match="no column 'url'"):
        pool.column("url", rows)


def test_clip_layout_errors_name_the_bad_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a clip-retrieval folder"):
        ClipPool(tmp_path)
    x = np.ones((4, 8), np.float16)
    write_clip_part(tmp_path, 0, x, {"key": ["a", "b", "c", "d"]})
    write_clip_part(tmp_path, 1, x, {"key": ["a", "b", "c", "d"]})
    assert ClipPool(tmp_path).n == 8
    (tmp_path / "metadata" / "metadata_1.parquet").unlink()
    with pytest.raises(DataError, match="metadata_1.parquet' is missing"):
        ClipPool(tmp_path)
    write_clip_part(tmp_path, 1, x[:3], {"key": ["a", "b", "c"]})
    write_clip_part(tmp_path, 1, x, {"key": ["a", "b", "c", "d"]})
    np.save(tmp_path / "img_emb" / "img_emb_1.npy", np.ones((3, 8), np.float16))
    with pytest.raises(DataError, match="has 4 rows but .*img_emb_1.npy' has 3"):
        ClipPool(tmp_path)
    np.save(tmp_path / "img_emb" / "img_emb_1.npy", np.ones((4, 16), np.float16))
    with pytest.raises(DataError, match="different widths"):
        ClipPool(tmp_path)


def test_encoder_and_dimension_mismatch_are_errors(pool_dir: Path, tmp_path: Path) -> None:
    pool = ClipPool(pool_dir)
    assert check_encoder(pool, None) == "synthetic" and check_encoder(pool, "synthetic", dim=32) == "synthetic"
    with pytest.raises(ConfigError, match="--encoder 'resnet10t' is not the encoder of .*Pass --encoder synthetic"):
        check_encoder(pool, "resnet10t")
    with pytest.raises(ConfigError, match="makes 512-d embeddings but the pool .* holds 32-d"):
        check_encoder(pool, "synthetic", dim=512)
    write_clip_part(tmp_path, 0, np.ones((2, 8), np.float16), {"key": ["a", "b"]})
    with pytest.raises(ConfigError, match="does not record its encoder"):
        check_encoder(ClipPool(tmp_path), None)
    assert check_encoder(ClipPool(tmp_path), "resnet10t", dim=8) == "resnet10t"


def test_ondisk_index_round_trip_reuses_the_trained_quantiser(pool_dir: Path, tmp_path: Path) -> None:
    pool = ClipPool(pool_dir)
    truth_q = np.load(pool_dir / "truth.npz")["queries"].astype(np.float32)
    params = ondisk_params(pool.n, pool.dim, chunk_rows=2000, nlist=16, nprobe=8, m=8)
    folder = tmp_path / "idx"
    built, loaded = build_ondisk_index(pool, folder, params, progress=False)
    assert not loaded and built.n == 6000 and not (folder / "blocks").exists()
    assert (folder / "merged" / "ivfpq.ivfdata").is_file() and (folder / "trained.index").is_file()
    s1, r1 = built.search(truth_q, 20)
    again, loaded = build_ondisk_index(pool, folder, params, progress=False)
    assert loaded
    s2, r2 = again.search(truth_q, 20)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2)
    fresh = OnDiskIndex.load(folder)
    np.testing.assert_array_equal(fresh.search(truth_q, 20)[1], r1)
    # another nprobe reuses everything; a rebuild (here: forced) reuses the trained quantiser file
    trained_mtime = (folder / "trained.index").stat().st_mtime_ns
    _, loaded = build_ondisk_index(pool, folder, params, progress=False, force=True)
    assert not loaded and (folder / "trained.index").stat().st_mtime_ns == trained_mtime
    # re-ranked shortlists carry exact cosines and match an exact scan on this clustered pool
    scores, rows = shortlist(fresh, pool, truth_q, 10, rerank=4)
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", truth_q, pool.vectors(rows.ravel()).reshape(
        len(truth_q), 10, -1)), rtol=1e-5, atol=1e-5)
    ex_s, ex_r = exact_topk(pool, truth_q, 10, chunk=1000, progress=False)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), ex_r.tolist(), strict=True)])
    assert recall >= 0.95


def test_a_stopped_build_resumes_at_the_first_missing_block(pool_dir: Path, tmp_path: Path, monkeypatch) -> None:
    pool = ClipPool(pool_dir)
    params = ondisk_params(pool.n, pool.dim, chunk_rows=2000, nlist=16)
    calls = {"n": 0}
    real = faiss.write_index

    def dying_write(index, path):  # noqa: ANN001, ANN202
        if "block-00001" in str(Path(path).name) or ".block-00001" in str(path):
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(index, path)

    monkeypatch.setattr(faiss, "write_index", dying_write)
    with pytest.raises(KeyboardInterrupt):
        build_ondisk_index(pool, tmp_path / "idx", params, progress=False)
    monkeypatch.setattr(faiss, "write_index", real)
    blocks = sorted(p.name for p in (tmp_path / "idx" / "blocks").iterdir())
    assert blocks == ["block-00000.index", "blocks.json"]  # no half-written block, no merged index
    assert not (tmp_path / "idx" / "merged").exists()
    written = []
    monkeypatch.setattr(faiss, "write_index", lambda i, p: (written.append(Path(p).name), real(i, p))[1])
    index, _ = build_ondisk_index(pool, tmp_path / "idx", params, progress=False)
    assert index.n == 6000 and not any("block-00000" in w for w in written)  # block 0 was reused, not rewritten
    assert any("block-00001" in w for w in written)


def test_curation_keeps_guard_copies_and_near_copies_out(pool_dir: Path) -> None:
    from taskdistill.retrieval.synthetic_pool import load_truth

    truth = load_truth(pool_dir)
    pool = ClipPool(pool_dir)
    guard = GuardSet(truth.guard.astype(np.float32), np.zeros((len(truth.guard), 1), np.float32),
                     [f"t{i}" for i in range(len(truth.guard))])
    params = ondisk_params(pool.n, pool.dim, chunk_rows=2500, nlist=16, nprobe=8)
    index, _ = build_ondisk_index(pool, pool_dir / "idx-curate", params, progress=False)
    n = 240
    approx = curate_pool(pool, _queries(truth), n, index, guard, progress=False)
    exact = curate_pool(pool, _queries(truth), n, None, guard, progress=False)
    assert len(approx.rows) == n == len(set(approx.rows.tolist()))
    assert len(set(approx.rows.tolist()) & set(exact.rows.tolist())) >= 0.95 * n
    picked = set(approx.rows.tolist())
    assert not picked & set(truth.leak_rows.tolist()) and approx.guard_dropped >= len(truth.leak_rows) // 2
    assert not any(r in picked and o in picked for r, o in zip(truth.dup_rows.tolist(), truth.dup_of.tolist(),
                                                                strict=True))
    planted = set(truth.planted_rows.tolist()) | set(truth.dup_rows.tolist())
    assert len(picked & planted) >= 0.95 * n
    per_query = np.bincount(approx.query[approx.query >= 0], minlength=len(truth.queries))
    assert per_query.min() >= n // len(truth.queries) - 1  # query-balanced
    assert np.all(np.diff(approx.scores[approx.query == 0]) <= 1e-6)  # each query's picks best first


def test_fetch_reads_only_the_picked_keys_into_a_loadable_manifest(tmp_path: Path, monkeypatch) -> None:
    spec = SyntheticSpec(n=2400, dim=16, classes=2, queries_per_class=2, planted_per_query=10, guard_per_query=1,
                         part_rows=1000, shards=True, shard_rows=1000)
    write_synthetic_pool(tmp_path / "pool", spec, progress=False)
    pool = ClipPool(tmp_path / "pool")
    with pytest.raises(DataError, match="pass --shards FOLDER"):
        locations_for(pool, np.array([1]))
    rows = np.array([2399, 5, 1500, 7, 999])
    ids, locations = locations_for(pool, rows, tmp_path / "pool" / "shards")
    assert ids == [f"{r // 1000:05d}{r % 1000:04d}" for r in rows.tolist()]
    assert locations[0] == f"{(tmp_path / 'pool' / 'shards' / '00002.tar').resolve()}#{ids[0]}"
    reads = []
    real = fetch_mod.read_member
    monkeypatch.setattr(fetch_mod, "read_member", lambda f, m: (reads.append(m), real(f, m))[1])
    copied = fetch_members(locations, tmp_path / "out" / "images", shard_size=3, progress=False)
    assert len(reads) == len(rows)  # only the picked members' bytes were read
    reader = LocationReader()
    assert [reader.read_bytes(c) for c in copied] == [reader.read_bytes(loc) for loc in locations]
    reader.close()
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["picked-00000.tar", "picked-00001.tar"]
    with tarfile.open(tmp_path / "out" / "images" / "picked-00000.tar") as tar:
        assert all(m.name.endswith((".png", ".json")) for m in tar.getmembers())
    with pytest.raises(DataError, match="has no image with key '000019999'"):
        fetch_members([locations[0].rsplit("#", 1)[0] + "#000019999"], tmp_path / "bad", progress=False)

    # the data layer loads the manifest like any curated one
    from taskdistill.data.prepare import _transfer_from_manifest

    manifest = tmp_path / "out" / "manifest.csv"
    write_manifest_rows(manifest, ids, ["web"] * len(ids), [0.5] * len(ids), ["q0"] * len(ids), copied)
    transfer = _transfer_from_manifest(str(manifest), ["a", "b"], 8, "fail")
    assert transfer.ids == ids and tuple(transfer.images.shape) == (len(rows), 3, 8, 8)


def test_synthetic_pool_is_cached_and_written_atomically(tmp_path: Path) -> None:
    spec = SyntheticSpec(n=1200, dim=8, classes=2, queries_per_class=2, planted_per_query=5, guard_per_query=1,
                         part_rows=500)
    write_synthetic_pool(tmp_path, spec, progress=False)
    stamp = json.loads((tmp_path / "synthetic.json").read_text())
    assert stamp["spec"]["n"] == 1200 and not [p for p in tmp_path.rglob("*.tmp")]
    mtime = os.stat(tmp_path / "img_emb" / "img_emb_0.npy").st_mtime_ns
    write_synthetic_pool(tmp_path, spec, progress=False)
    assert os.stat(tmp_path / "img_emb" / "img_emb_0.npy").st_mtime_ns == mtime
    norms = np.linalg.norm(ClipPool(tmp_path).vectors(np.arange(1200)), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)


def test_fetch_reads_picked_keys_from_shards_behind_an_fsspec_url(tmp_path: Path) -> None:
    """Shards on a remote filesystem (fsspec's in-memory one here, as s3:// or https:// would be): the picked
    members are read by offset and copied into local shards the data layer loads; a missing key names it."""
    import fsspec

    spec = SyntheticSpec(n=2400, dim=16, classes=2, queries_per_class=2, planted_per_query=10, guard_per_query=1,
                         part_rows=1000, shards=True, shard_rows=1000)
    write_synthetic_pool(tmp_path / "pool", spec, progress=False)
    fs = fsspec.filesystem("memory")
    for shard in sorted((tmp_path / "pool" / "shards").glob("*.tar")):
        fs.pipe(f"/remote-{tmp_path.name}/{shard.name}", shard.read_bytes())
    pool = ClipPool(tmp_path / "pool")
    rows = np.array([2399, 5, 1500])
    _, local = locations_for(pool, rows, tmp_path / "pool" / "shards")
    ids, remote = locations_for(pool, rows, f"memory://remote-{tmp_path.name}/")
    assert remote[0] == f"memory://remote-{tmp_path.name}/00002.tar#{ids[0]}"
    copied = fetch_members(remote, tmp_path / "out", progress=False)
    reader = LocationReader()
    assert [reader.read_bytes(c) for c in copied] == [reader.read_bytes(loc) for loc in local]
    reader.close()
    with pytest.raises(DataError, match="has no image with key 'nope'"):
        fetch_members([f"memory://remote-{tmp_path.name}/00000.tar#nope"], tmp_path / "bad", progress=False)


def test_rows_asked_for_twice_come_back_twice(pool_dir: Path) -> None:
    pool = ClipPool(pool_dir)
    every = pool.vectors(np.arange(4))
    np.testing.assert_array_equal(pool.vectors(np.array([0, 0, 2])), every[[0, 0, 2]])
    np.testing.assert_array_equal(pool.vectors(np.array([3, 1, 1])), every[[3, 1, 1]])


def test_a_quantiser_trained_on_another_pool_is_not_reused(pool_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_synthetic_pool(other, SyntheticSpec(**{**SPEC.__dict__, "seed": 4}), progress=False)
    params = ondisk_params(6000, 32, chunk_rows=2000, nlist=16, nprobe=8, m=8)
    folder = tmp_path / "shared-idx"
    build_ondisk_index(ClipPool(pool_dir), folder, params, progress=False)
    first = json.loads((folder / "trained.json").read_text())
    _, loaded = build_ondisk_index(ClipPool(other), folder, params, progress=False)
    second = json.loads((folder / "trained.json").read_text())
    assert not loaded and first["trained_on"] != second["trained_on"] == ClipPool(other).fingerprint()


def test_rewriting_a_pool_smaller_leaves_none_of_its_old_parts(tmp_path: Path) -> None:
    write_synthetic_pool(tmp_path / "p", SyntheticSpec(**{**SPEC.__dict__, "n": 6000}), progress=False)
    write_synthetic_pool(tmp_path / "p", SyntheticSpec(**{**SPEC.__dict__, "n": 3000}), progress=False)
    assert ClipPool(tmp_path / "p").n == 3000
