"""Selection strategies on hand-made embeddings with known answers, duplicates and the leakage guard."""

from __future__ import annotations

import json
from pathlib import Path

import faiss  # noqa: E402,F401  (the test extra installs it: a missing install must fail, not skip)
import numpy as np
import pytest
import torch
from PIL import Image

from taskdistill.errors import ConfigError  # noqa: E402
from taskdistill.retrieval.curate import (  # noqa: E402
    DupRule,
    GuardSet,
    Queries,
    guard_set,
    leakage_flags,
    select,
    text_queries,
)
from taskdistill.retrieval.embed import EncoderSpec, build_encoder, embed_pool, load_embeddings  # noqa: E402
from taskdistill.retrieval.index import build_index  # noqa: E402
from taskdistill.retrieval.pool import open_pool  # noqa: E402
from taskdistill.retrieval.transfer_set import CurateOptions, curate_transfer_set  # noqa: E402
from tests.retrieval.helpers import blob_image, image_set, toy_embeddings, unit  # noqa: E402

D = 8


def direction(sim: float, towards: int, side: int) -> np.ndarray:
    """A unit vector with cosine `sim` to axis `towards`, the rest along axis `side`."""
    v = np.zeros(D, np.float32)
    v[towards], v[side] = sim, np.sqrt(max(0.0, 1 - sim * sim))
    return v


@pytest.fixture()
def toy() -> tuple:
    """Pool: rows 0-5 close to axis 0 (0.99 .. 0.94), rows 6-8 close to axis 1 (0.80 .. 0.78), rows 9-11 far.
    Queries: axis 0 (class a) and axis 1 (class b)."""
    rows = [direction(0.99 - 0.01 * i, 0, 2 + i % 3) for i in range(6)]
    rows += [direction(0.80 - 0.01 * i, 1, 5 + i) for i in range(3)]
    rows += [np.eye(D, dtype=np.float32)[7] + 0.1 * np.eye(D, dtype=np.float32)[k] for k in (2, 3, 4)]
    emb = toy_embeddings(np.stack(rows), sources=["task"] * 9 + ["other"] * 3)
    queries = Queries(unit(np.eye(D)[:2]), np.array([0, 1]), ["a:q0", "b:q1"], ["a", "b"])
    return emb, queries


def everything(n: int) -> np.ndarray:
    return np.ones(n, bool)


def test_best_matches_takes_the_global_top(toy: tuple) -> None:
    emb, queries = toy
    sel = select(emb, "best-matches", 4, queries, everything(len(emb)))
    assert sel.rows == [0, 1, 2, 3] and sel.queries == ["a:q0"] * 4
    np.testing.assert_allclose(sel.scores, [0.99, 0.98, 0.97, 0.96], atol=1e-5)
    eligible = everything(len(emb))
    eligible[1] = False
    assert select(emb, "best-matches", 4, queries, eligible).rows == [0, 2, 3, 4]


def test_query_balanced_gives_each_query_its_share(toy: tuple) -> None:
    emb, queries = toy
    for index in (None, build_index(emb.vectors, "flat")):
        sel = select(emb, "query-balanced-image", 4, queries, everything(len(emb)), index=index)
        assert sorted(zip(sel.rows, sel.queries, strict=True)) == [(0, "a:q0"), (1, "a:q0"), (6, "b:q1"), (7, "b:q1")]
        assert sel.summary["filled_from_best_matches"] == 0


def test_query_balanced_overlap_moves_on_to_the_next_best() -> None:
    # both queries' nearest image is row 0; the second query must take its own next-best (row 2), not row 0
    e = np.eye(D, dtype=np.float32)
    rows = np.stack([e[0] + 0.1 * e[1], direction(0.97, 0, 3), e[0] + 0.3 * e[1] + 0.1 * e[4], e[5]])
    emb = toy_embeddings(rows)
    queries = Queries(unit(np.stack([e[0], e[0] + 0.2 * e[1]])), np.array([0, 1]), ["q0", "q1"], ["a", "b"])
    assert (emb.vectors @ queries.vectors.T).argmax(0).tolist() == [0, 0]  # row 0 is both queries' nearest
    sel = select(emb, "query-balanced-image", 2, queries, everything(4))
    assert sel.rows == [0, 2] and sel.queries == ["q0", "q1"]


def test_class_balanced_counts_per_class_and_fills_shortfalls(toy: tuple) -> None:
    emb, queries = toy
    # two queries for class a, one for class b
    q = Queries(unit(np.stack([np.eye(D)[0], direction(0.9, 0, 6), np.eye(D)[1]])), np.array([0, 0, 1]),
                ["a:q0", "a:q1", "b:q2"], ["a", "b"])
    sel = select(emb, "class-balanced", 6, q, everything(len(emb)))
    picked = dict(zip(sel.rows, sel.queries, strict=True))
    assert sorted(r for r, c in picked.items() if c == "class:a") == [0, 1, 2]
    assert sorted(r for r, c in picked.items() if c == "class:b") == [6, 7, 8]
    # class b has only 3 images of its own: a request for 10 fills 4 more from the best-matches order
    sel = select(emb, "class-balanced", 10, q, everything(len(emb)))
    assert len(sel.rows) == 10 and sel.summary["filled_from_best_matches"] == 2
    assert set(sel.rows) == set(range(10))  # class a: 0-4, class b: 6-8, fill: 5 then 9 (score ties)


def test_random_is_seeded_and_respects_eligibility(toy: tuple) -> None:
    emb, queries = toy
    eligible = everything(len(emb))
    eligible[[0, 5, 9]] = False
    a = select(emb, "random", 5, queries, eligible, seed=0)
    assert len(a.rows) == 5 and not {0, 5, 9} & set(a.rows)
    assert select(emb, "random", 5, queries, eligible, seed=0).rows == a.rows
    assert any(select(emb, "random", 5, queries, eligible, seed=s).rows != a.rows for s in (1, 2, 3))
    assert select(emb, "random", 5, None, eligible).rows  # random needs no queries


def test_near_duplicates_inside_the_set_are_removed(toy: tuple) -> None:
    emb, queries = toy
    vecs = np.concatenate([emb.vectors, emb.vectors[[0]]])  # row 12: an exact copy of row 0
    sigs = np.eye(13, dtype=np.float32)
    sigs[12] = sigs[0]
    dup = toy_embeddings(vecs, signatures=sigs)
    sel = select(dup, "best-matches", 3, queries, everything(13))
    assert sel.rows == [0, 1, 2] and sel.summary["duplicates_rejected"] == 1
    assert select(dup, "best-matches", 3, queries, everything(13), dedup_rule=None).rows == [0, 12, 1]


def test_unknown_strategy_and_missing_queries(toy: tuple) -> None:
    emb, _ = toy
    with pytest.raises(ConfigError, match="Did you mean 'best-matches'"):
        select(emb, "best-match", 3, None, everything(len(emb)))
    with pytest.raises(ConfigError, match="needs query images"):
        select(emb, "class-balanced", 3, None, everything(len(emb)))


def test_dup_rule_and_leakage_flags_on_hand_made_vectors() -> None:
    rule = DupRule(sig_threshold=0.98, emb_threshold=0.96, sig_floor=0.93)
    g_emb, g_sig = unit(np.eye(4)[:2]), unit(np.eye(6)[:2])
    guard = GuardSet(g_emb, g_sig, ["test/0", "test/1"])

    def pool_row(emb_cos: float, sig_cos: float, to: int) -> tuple[np.ndarray, np.ndarray]:
        e = np.zeros(4, np.float32)
        e[to], e[3] = emb_cos, np.sqrt(1 - emb_cos ** 2)
        s = np.zeros(6, np.float32)
        s[to], s[5] = sig_cos, np.sqrt(1 - sig_cos ** 2)
        return e, s

    cases = [(0.10, 0.999, 0), (0.99, 0.95, 1), (0.99, 0.50, 0), (0.50, 0.97, 1), (0.20, 0.20, 0)]
    rows = [pool_row(*c) for c in cases]
    emb = toy_embeddings(np.stack([r[0] for r in rows]), signatures=np.stack([r[1] for r in rows]))
    flags, match, reason = leakage_flags(emb, guard, rule)
    assert flags.tolist() == [True, True, False, False, False]
    assert match.tolist() == [0, 1, -1, -1, -1] and reason.tolist() == [1, 2, 0, 0, 0]


def _planted_pool(tmp_path: Path) -> tuple[Path, list, list[str]]:
    """A folder pool of 40 distinct images plus exact, enlarged and JPEG copies of 4 'test' images."""
    rng = np.random.default_rng(7)
    tests = [blob_image(rng, 28) for _ in range(6)]
    (tmp_path / "pool" / "web").mkdir(parents=True)
    (tmp_path / "pool" / "planted").mkdir()
    for i in range(40):
        Image.fromarray(blob_image(rng, 28)).save(tmp_path / "pool" / "web" / f"{i:03d}.png")
    planted = []
    for j in range(4):
        im = Image.fromarray(tests[j])
        im.save(tmp_path / "pool" / "planted" / f"exact{j}.png")
        im.resize((72, 72), Image.Resampling.BICUBIC).save(tmp_path / "pool" / "planted" / f"big{j}.png")
        im.resize((20, 20), Image.Resampling.LANCZOS).save(tmp_path / "pool" / "planted" / f"small{j}.png")
        im.save(tmp_path / "pool" / "planted" / f"jpeg{j}.jpg", quality=85)
        planted += [f"planted/exact{j}.png", f"planted/big{j}.png", f"planted/small{j}.png", f"planted/jpeg{j}.jpg"]
    return tmp_path / "pool", tests, planted


def test_leakage_guard_drops_exact_and_resized_copies_with_a_random_encoder(tmp_path: Path) -> None:
    pool_dir, tests, planted = _planted_pool(tmp_path)
    spec = EncoderSpec(name="resnet10t", pretrained=False, input_size=32)
    embed_pool(open_pool(pool_dir), spec, tmp_path / "emb", shard_size=32)
    emb = load_embeddings(tmp_path / "emb")
    test_set = image_set(tests, [f"test/{i}" for i in range(6)])
    g = guard_set(build_encoder(spec), [test_set])
    flags, match, reason = leakage_flags(emb, g, DupRule())
    flagged = sorted(emb.ids[i] for i in np.flatnonzero(flags))
    assert flagged == sorted(planted)  # every copy caught, no distinct image dropped
    for i in np.flatnonzero(flags):
        assert g.ids[match[i]] == f"test/{emb.ids[i][-5]}"  # matched to the image it copies
    # exact and resized copies: the pixel signature alone, whatever the encoder; small JPEGs may need the
    # embedding clause (their artefacts lower the signature cosine to ~0.95)
    lossless = [i for i in np.flatnonzero(flags) if not emb.ids[i].endswith(".jpg")]
    assert len(lossless) == 12 and (reason[lossless] == 1).all()


def test_curate_transfer_set_writes_manifest_and_summary(tmp_path: Path) -> None:
    pool_dir, tests, planted = _planted_pool(tmp_path)
    spec = EncoderSpec(name="resnet10t", pretrained=False, input_size=32)
    embed_pool(open_pool(pool_dir), spec, tmp_path / "emb", shard_size=32)
    rng = np.random.default_rng(9)
    labeled = image_set([blob_image(rng, 28) for _ in range(4)], [f"lab/{i}" for i in range(4)], [0, 0, 1, 1])
    guard = {"test": image_set(tests[:4], [f"test/{i}" for i in range(4)]),
             "val": image_set(tests[4:], ["val/0", "val/1"])}
    for strategy in ("random", "best-matches", "query-balanced-image", "class-balanced"):
        out = tmp_path / strategy
        summary = curate_transfer_set(tmp_path / "emb", labeled, guard,
                                      CurateOptions(strategy=strategy, n=12, views=2, task_source="web"), out)
        lines = (out / "manifest.csv").read_text().splitlines()
        assert lines[0] == "id,source,score,query,location" and len(lines) == 13
        ids = [line.split(",")[0] for line in lines[1:]]
        assert not set(ids) & set(planted) and len(set(ids)) == 12
        assert summary["leakage"]["dropped"] == 16 and summary["leakage"]["dropped_by_source"] == {"planted": 16}
        assert summary["leakage"]["guard_images"] == {"test": 4, "val": 2}
        assert summary["leakage"]["cached"] == (strategy != "random")  # guard work is reused across strategies
        assert summary["precision"] == 1.0 and summary["sources"] == {"web": 12}
        assert json.loads((out / "summary.json").read_text())["n_selected"] == 12
    assert summary["index"] is None and (tmp_path / "emb" / "index-auto.faiss").is_file()  # built by query-balanced


def test_text_queries_need_open_clip_and_embed_class_prompts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs an open_clip encoder"):
        text_queries(EncoderSpec(name="resnet10t"), ["a", "b"])
    import open_clip  # the hub extra, installed by `make test`
    name = "taskdistill-tiny-retrieval-clip"
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path)
    spec = EncoderSpec(name=f"open_clip:{name}")
    q = text_queries(spec, ["sneaker", "bag", "dress"])
    assert q.vectors.shape == (3, 16) and q.labels.tolist() == [0, 1, 2]
    np.testing.assert_allclose(np.linalg.norm(q.vectors, axis=1), 1.0, atol=1e-5)
    assert q.names[0] == "text:a photo of a sneaker." and not np.allclose(q.vectors[0], q.vectors[1])
    with pytest.raises(ConfigError, match="must contain"):
        text_queries(spec, ["x"], prompt="a photo")
    # end to end: the text strategy over a pool embedded with the same tiny CLIP's image tower
    rng = np.random.default_rng(0)
    (tmp_path / "pool" / "web").mkdir(parents=True)
    for i in range(12):
        Image.fromarray(blob_image(rng, 32)).save(tmp_path / "pool" / "web" / f"{i}.png")
    embed_pool(open_pool(tmp_path / "pool"), spec, tmp_path / "emb")
    labeled = image_set([blob_image(rng, 32) for _ in range(2)], ["l0", "l1"], [0, 1], ["sneaker", "bag"])
    summary = curate_transfer_set(tmp_path / "emb", labeled, {}, CurateOptions("query-balanced-text", n=6),
                                  tmp_path / "out")
    assert summary["n_selected"] == 6 and summary["queries"] == 2
    rows = (tmp_path / "out" / "manifest.csv").read_text().splitlines()[1:]
    assert sum("text:a photo of a sneaker." in r for r in rows) == 3


def test_query_views_add_crops_and_flips() -> None:
    from taskdistill.retrieval.curate import image_queries

    rng = np.random.default_rng(0)
    labeled = image_set([blob_image(rng, 28) for _ in range(3)], ["x", "y", "z"], [0, 1, 1])
    enc = build_encoder(EncoderSpec(name="resnet10t", input_size=32))
    q = image_queries(enc, labeled, views=3, seed=0)
    assert q.vectors.shape[0] == 12 and q.labels.tolist() == [0] * 4 + [1] * 8
    assert q.names[:4] == ["a:x@v0", "a:x@v1", "a:x@v2", "a:x@v3"]
    assert not torch.allclose(torch.from_numpy(q.vectors[0]), torch.from_numpy(q.vectors[1]))
