"""A curated manifest (`location` column: paths or `shard.tar#key`) as a transfer set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from taskdistill.data.image_set import UNLABELED
from taskdistill.data.prepare import _transfer_from_manifest
from taskdistill.data.sources import decode_image
from taskdistill.errors import DataError
from tests.retrieval.helpers import blob_image, write_blobs, write_shard


def test_location_manifest_decodes_files_and_shard_members(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = [blob_image(rng, 20) for _ in range(3)]
    write_shard(tmp_path / "pool" / "shard-00000.tar", [(f"{i:04d}", a, "web") for i, a in enumerate(arrays)])
    files = write_blobs(tmp_path / "files", 1, seed=1)
    shard = (tmp_path / "pool" / "shard-00000.tar").resolve()
    (tmp_path / "cur").mkdir()
    (tmp_path / "cur" / "manifest.csv").write_text(
        "id,source,score,query,location\n"
        f"shard-00000.tar/0002,web,0.91,a:x@v0,{shard}#0002\n"
        f"f0,files,0.50,\"b:y,z@v1\",../files/000.png\n"  # relative to the manifest's folder
        f",web,,,../pool/shard-00000.tar#0000\n")  # no id: the location stands in
    got = _transfer_from_manifest(str(tmp_path / "cur" / "manifest.csv"), ["a", "b"], 20, "fail")
    assert got.ids == ["shard-00000.tar/0002", "f0", "../pool/shard-00000.tar#0000"]
    assert got.labels.tolist() == [UNLABELED] * 3 and got.class_names == ["a", "b"]
    assert torch.equal(got.images[0], torch.from_numpy(arrays[2]).permute(2, 0, 1))
    assert torch.equal(got.images[1], decode_image(files[0], 20))
    assert torch.equal(got.images[2], torch.from_numpy(arrays[0]).permute(2, 0, 1))


def test_missing_member_fails_or_is_skipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_shard(tmp_path / "s.tar", [("k0", blob_image(rng, 16), "web")])
    (tmp_path / "m.csv").write_text("id,location\na,s.tar#k0\nb,s.tar#nope\nc,gone.tar#k0\n")
    with pytest.raises(DataError, match="s.tar#nope"):
        _transfer_from_manifest(str(tmp_path / "m.csv"), ["a"], 16, "fail")
    got = _transfer_from_manifest(str(tmp_path / "m.csv"), ["a"], 16, "skip")
    assert got.ids == ["a"] and got.skipped == ["s.tar#nope", "gone.tar#k0"]
    (tmp_path / "empty.csv").write_text("id,location\na,\n")
    with pytest.raises(DataError, match="empty 'location'"):
        _transfer_from_manifest(str(tmp_path / "empty.csv"), ["a"], 16, "fail")


def test_path_manifest_still_works(tmp_path: Path) -> None:
    files = write_blobs(tmp_path / "imgs", 2, seed=0)
    (tmp_path / "m.csv").write_text("path\nimgs/000.png\nimgs/001.png\n")
    got = _transfer_from_manifest(str(tmp_path / "m.csv"), ["a"], 16, "fail")
    assert len(got) == 2 and torch.equal(got.images[1], decode_image(files[1], 16))
    (tmp_path / "bad.csv").write_text("file\nimgs/000.png\n")
    with pytest.raises(DataError, match="'path' \\(or 'location'\\) column"):
        _transfer_from_manifest(str(tmp_path / "bad.csv"), ["a"], 16, "fail")
