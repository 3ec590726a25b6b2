"""Pool embedding: files, unit vectors, pixel signatures, resume after a crash, encoder checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from taskdistill.errors import ConfigError, DataError
from taskdistill.retrieval import embed as embed_mod
from taskdistill.retrieval.embed import (
    EncoderSpec,
    build_encoder,
    embed_pool,
    load_embeddings,
    pixel_signature,
)
from taskdistill.retrieval.pool import open_pool
from tests.retrieval.helpers import blob_image, write_blobs

TINY = EncoderSpec(name="resnet10t", pretrained=False, input_size=32)


@pytest.fixture()
def pool_dir(tmp_path: Path) -> Path:
    write_blobs(tmp_path / "pool" / "a", 6, seed=0)
    write_blobs(tmp_path / "pool" / "b", 5, seed=1)
    return tmp_path / "pool"


def test_pixel_signature_matches_copies_not_other_images() -> None:
    rng = np.random.default_rng(0)
    a, b = blob_image(rng, 28), blob_image(rng, 28)
    big = np.asarray(Image.fromarray(a).resize((80, 80), Image.Resampling.BICUBIC))
    dim = np.clip(a.astype(np.float32) * 0.6 + 20, 0, 255).astype(np.uint8)
    flat1, flat2 = np.full((28, 28, 3), 10, np.uint8), np.full((50, 50, 3), 200, np.uint8)

    def sig(arr: np.ndarray) -> torch.Tensor:
        return pixel_signature(torch.from_numpy(arr.copy()).permute(2, 0, 1)[None])[0]

    s = {k: sig(v) for k, v in dict(a=a, b=b, big=big, dim=dim, flat1=flat1, flat2=flat2).items()}
    assert s["a"].shape == (embed_mod.SIG_DIM,)
    assert float(s["a"] @ s["big"]) > 0.98  # a resized copy
    assert float(s["a"] @ s["dim"]) > 0.99  # brightness / contrast changed
    assert float(s["a"] @ s["b"]) < 0.6
    assert float(s["flat1"] @ s["flat2"]) == pytest.approx(1.0) and float(s["flat1"] @ s["a"]) == 0.0


def test_embed_writes_unit_vectors_ids_and_meta(pool_dir: Path, tmp_path: Path) -> None:
    pool = open_pool(pool_dir)
    meta = embed_pool(pool, TINY, tmp_path / "emb", shard_size=4, batch_size=3, dtype="float32")
    assert meta["complete"] and meta["count"] == 11 and meta["shards"] == 3 and meta["dim"] == 512
    assert sorted(p.name for p in (tmp_path / "emb").glob("emb-*.npy")) == ["emb-00000.npy", "emb-00001.npy",
                                                                            "emb-00002.npy"]
    emb = load_embeddings(tmp_path / "emb")
    assert emb.vectors.shape == (11, 512) and emb.signatures.shape == (11, embed_mod.SIG_DIM)
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    assert emb.ids == pool.ids and emb.sources == ["a"] * 6 + ["b"] * 5 and emb.valid.all()
    # the same as encoding the decoded images directly with the rebuilt encoder
    enc = build_encoder(TINY)
    (batch,) = list(pool.batches(11, 32))
    np.testing.assert_allclose(emb.vectors, embed_mod.encode(enc, batch.images).numpy(), atol=1e-5)


def test_interrupted_embed_resumes_at_the_first_missing_shard(pool_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pool = open_pool(pool_dir)
    clean = embed_pool(pool, TINY, tmp_path / "clean", shard_size=4, dtype="float32")
    out = tmp_path / "emb"
    real_save = embed_mod._save_npy
    saves = []

    def crash_after_first_shard(path: Path, arr: np.ndarray) -> None:
        if len(saves) == 2:  # shard 0 wrote sig + emb; die while writing shard 1
            raise KeyboardInterrupt("simulated crash")
        saves.append(path.name)
        real_save(path, arr)

    monkeypatch.setattr(embed_mod, "_save_npy", crash_after_first_shard)
    with pytest.raises(KeyboardInterrupt):
        embed_pool(pool, TINY, out, shard_size=4, dtype="float32")
    assert saves == ["sig-00000.npy", "emb-00000.npy"]
    assert not list(out.glob(".*.tmp")) and not (out / "emb-00001.npy").exists()
    with pytest.raises(ConfigError, match="unfinished.*1 of 3 shards"):
        load_embeddings(out)
    first = (out / "emb-00000.npy").stat().st_mtime_ns

    monkeypatch.setattr(embed_mod, "_save_npy", real_save)
    encoded = []
    real_encode = embed_mod.encode
    monkeypatch.setattr(embed_mod, "encode", lambda enc, images, *a, **k: encoded.append(len(images))
                        or real_encode(enc, images, *a, **k))
    meta = embed_pool(pool, TINY, out, shard_size=4, dtype="float32")
    assert meta["complete"] and sum(encoded) == 11 - 4  # shard 0 was kept, not recomputed
    assert (out / "emb-00000.npy").stat().st_mtime_ns == first
    np.testing.assert_allclose(load_embeddings(out).vectors, load_embeddings(tmp_path / "clean").vectors, atol=1e-6)
    assert clean["weights_sha256"] == meta["weights_sha256"]


def test_rerun_with_another_encoder_needs_force(pool_dir: Path, tmp_path: Path) -> None:
    pool = open_pool(pool_dir)
    embed_pool(pool, TINY, tmp_path / "emb", shard_size=8)
    other = EncoderSpec(name="resnet10t", pretrained=False, input_size=32, seed=1)
    with pytest.raises(ConfigError, match="another encoder.*--force"):
        embed_pool(pool, other, tmp_path / "emb", shard_size=8)
    meta = embed_pool(pool, other, tmp_path / "emb", shard_size=8, force=True)
    assert meta["encoder"]["seed"] == 1 and load_embeddings(tmp_path / "emb").vectors.dtype == np.float32


def test_taskdistill_checkpoint_as_encoder(tmp_path: Path) -> None:
    from taskdistill.engine.checkpoint import save_checkpoint
    from taskdistill.models import create_model

    torch.manual_seed(3)
    model = create_model("resnet10t", 3, input_size=32)
    save_checkpoint(tmp_path / "ck", model, ["x", "y", "z"], stage="student")
    enc = build_encoder(EncoderSpec(name=None, checkpoint=str(tmp_path / "ck")))
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    model.eval()
    from taskdistill.data.views import model_input

    with torch.no_grad():
        want = torch.nn.functional.normalize(model.forward_head(model.forward_features(
            model_input(images, model.preprocess)), pre_logits=True), dim=1)
    torch.testing.assert_close(embed_mod.encode(enc, images), want, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="differs from the model in checkpoint"):
        build_encoder(EncoderSpec(name="resnet18", checkpoint=str(tmp_path / "ck")))
    with pytest.raises(ConfigError, match="no encoder given"):
        build_encoder(EncoderSpec(name=None))


def test_unreadable_images_fail_or_become_zero_rows(pool_dir: Path, tmp_path: Path) -> None:
    (pool_dir / "b" / "zz-broken.png").write_bytes(b"\x89PNG broken")
    pool = open_pool(pool_dir)
    with pytest.raises(DataError, match="zz-broken.png.*--on-bad-image skip"):
        embed_pool(pool, TINY, tmp_path / "emb")
    embed_pool(pool, TINY, tmp_path / "emb2", on_bad_image="skip")
    emb = load_embeddings(tmp_path / "emb2")
    assert emb.valid.tolist() == [True] * 11 + [False]


def test_member_names_with_newlines_keep_one_id_each(tmp_path: Path) -> None:
    from tests.retrieval.helpers import write_shard

    rng = np.random.default_rng(0)
    write_shard(tmp_path / "pool" / "s.tar", [("plain", blob_image(rng, 16), "web"),
                                              ("two\nlines", blob_image(rng, 16), "web"),
                                              ('quote"d', blob_image(rng, 16), "web")])
    embed_pool(open_pool(tmp_path / "pool"), TINY, tmp_path / "emb", shard_size=8, batch_size=4)
    emb = load_embeddings(tmp_path / "emb")
    assert emb.ids == ["s.tar/plain", "s.tar/two\nlines", 's.tar/quote"d']
    assert emb.locations[1].endswith("s.tar#two\nlines")
