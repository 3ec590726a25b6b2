"""`taskdistill curate` pointed at a clip-retrieval folder: the web-scale path end to end on a tiny pool."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import faiss  # noqa: F401  (the test extra installs it: a missing install must fail, not skip)

from taskdistill.cli.main import main
from taskdistill.retrieval.clip_layout import ClipPool, export_embeddings
from tests.retrieval.test_cli import _pool


def test_curate_a_clip_retrieval_pool_and_run_with_the_manifest(shapes_dataset, tmp_path: Path, capsys) -> None:
    train, test = shapes_dataset
    planted = _pool(tmp_path / "pool", test)
    emb = tmp_path / "emb"
    assert main(["embed", str(tmp_path / "pool"), "--encoder", "resnet10t", "--input-size", "32", "--out", str(emb),
                 "--shard-size", "20", "--device", "cpu"]) == 0
    clip = tmp_path / "clip"
    export_embeddings(emb, clip, part_rows=25)
    pool = ClipPool(clip)
    assert (pool.n, pool.dim, len(pool.parts)) == (54, 512, 3)
    assert json.loads((clip / "encoder.json").read_text())["encoder"] == "resnet10t"
    capsys.readouterr()

    data = ["--set", "data.dataset=folder", "--set", f"data.root={train}", "--set", f"data.test_root={test}",
            "--set", "data.labels_per_class=4", "--set", "data.val_per_class=2",
            # a random-init encoder rates every pair of images alike (cosines ~0.9): only exact copies count
            "--leak-emb-threshold", "0.9999", "--dedup-emb-threshold", "0.9999"]
    out = tmp_path / "curated"
    assert main(["curate", str(clip), *data, "--n", "20", "--out", str(out), "--views", "1",
                 "--task-source", "shapes", "--copy-images"]) == 0
    printed = capsys.readouterr().out
    assert f"distill.transfer.source={out / 'manifest.csv'}" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_selected"] == 20 and summary["pool_size"] == 54 and summary["index"]["kind"] == "ivf-pq-ondisk"
    assert summary["leakage"]["guard_images"] == {"test": 30, "val": 6} and summary["leakage"]["dropped"] >= 1
    # only planted copies of test images are dropped (no signatures here: the embedding clause alone decides)
    dropped = pool.column("key", [e["pool_row"] for e in summary["leakage"]["examples"]])
    assert dropped and set(dropped) <= set(planted)
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == 20 and not set(ids) & set(dropped)
    assert all(r["location"].startswith(str((out / "images").resolve())) for r in rows)

    # the index is saved and reused by the next curation of the same pool
    assert main(["curate", str(clip), *data, "--n", "20", "--out", str(tmp_path / "again"), "--views", "1"]) == 0
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["index"]["loaded"] is True

    from taskdistill.config import RunConfig, load_config
    from taskdistill.data.prepare import prepare_data
    from tests.conftest import tiny_overrides

    cfg = load_config(RunConfig, None, [*tiny_overrides(train, test, tmp_path / "runs"),
                                        f"distill.transfer.source={out / 'manifest.csv'}"])
    transfer = prepare_data(cfg).transfer
    assert transfer.ids == ids and transfer.images.shape == (20, 3, 16, 16)


def test_web_curate_errors_name_the_bad_input(shapes_dataset, tmp_path: Path, capsys) -> None:
    train, test = shapes_dataset
    _pool(tmp_path / "pool", test)
    emb = tmp_path / "emb"
    assert main(["embed", str(tmp_path / "pool"), "--encoder", "resnet10t", "--input-size", "32", "--out", str(emb),
                 "--shard-size", "64"]) == 0
    export_embeddings(emb, tmp_path / "clip")
    capsys.readouterr()
    data = ["--set", "data.dataset=folder", "--set", f"data.root={train}", "--set", f"data.test_root={test}"]
    assert main(["curate", str(tmp_path / "clip"), *data, "--n", "5", "--out", str(tmp_path / "c"),
                 "--encoder", "resnet18"]) == 2
    assert "--encoder 'resnet18' is not the encoder of" in capsys.readouterr().err
    assert main(["curate", str(tmp_path / "clip"), *data, "--n", "5", "--out", str(tmp_path / "c"),
                 "--strategy", "class-balanced"]) == 2
    assert "only" not in (err := capsys.readouterr().err) and "query-balanced-image" in err
    (tmp_path / "clip" / "encoder.json").unlink()
    assert main(["curate", str(tmp_path / "clip"), *data, "--n", "5", "--out", str(tmp_path / "c")]) == 2
    assert "does not record its encoder" in capsys.readouterr().err
    assert main(["curate", str(tmp_path / "clip"), *data, "--n", "5", "--out", str(tmp_path / "c"),
                 "--encoder", "resnet18", "--input-size", "32"]) == 0  # same width (512): accepted, user's call
    assert main(["curate", str(tmp_path / "clip"), *data, "--n", "5", "--out", str(tmp_path / "c"),
                 "--encoder", "efficientnet_b0", "--input-size", "32"]) == 2
    assert "makes 1280-d embeddings but the pool" in capsys.readouterr().err
