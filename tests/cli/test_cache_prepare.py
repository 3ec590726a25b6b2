"""`taskdistill prepare` builds a config's stores without training; `taskdistill cache ls | verify | rm`."""

from __future__ import annotations

import json

from taskdistill.cli.main import main
from tests.conftest import tiny_overrides


def sets(train, test, tmp_path) -> list[str]:
    return [a for o in tiny_overrides(train, test, tmp_path / "runs") for a in ("--set", o)]


def test_prepare_then_cache_ls_verify_rm(shapes_dataset, tmp_path, capsys):
    train, test = shapes_dataset
    store_dir = tmp_path / "stores"
    args = ["prepare", *sets(train, test, tmp_path), "--set", f"data.store_dir={store_dir}"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sets"] == {"labeled": 12, "val": 0, "transfer": 40, "test": 30, "skipped_bad_images": 0}
    assert [s["images"] for s in out["stores"]] == [90, 30] and all(s["shape"][1:] == [3, 16, 16] for s in out["stores"])
    assert not (tmp_path / "runs").exists()  # no run folder, no training
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "train folder" in text and str(store_dir) in text
    assert main(["cache", "ls", "--store-dir", str(store_dir)]) == 0
    listing = capsys.readouterr().out
    assert "2 store(s)" in listing and "16px crop rgb" in listing
    key = out["stores"][0]["key"]
    assert main(["cache", "verify", "--store-dir", str(store_dir)]) == 0
    assert capsys.readouterr().out.count(": ok") == 2
    assert main(["cache", "rm", "--store-dir", str(store_dir), key[:10]]) == 0
    assert "freed" in capsys.readouterr().out
    assert not (store_dir / key).exists() and len([p for p in store_dir.iterdir() if p.is_dir()]) == 1
    assert main(["cache", "rm", "--store-dir", str(store_dir), "nosuchkey"]) == 2
    assert "no store" in capsys.readouterr().err
    assert main(["cache", "rm", "--store-dir", str(store_dir), "--all"]) == 0
    assert main(["cache", "ls", "--store-dir", str(store_dir)]) == 0
    assert "no image stores" in capsys.readouterr().out


def test_bad_decode_settings_are_config_errors(shapes_dataset, tmp_path, capsys):
    train, test = shapes_dataset
    assert main(["prepare", *sets(train, test, tmp_path), "--set", "data.crop_pct=1.5"]) == 2
    assert "crop_pct must be in (0, 1]" in capsys.readouterr().err
    assert main(["prepare", *sets(train, test, tmp_path), "--set", "data.decode_workers=0"]) == 2
    assert "data.decode_workers must be >= 1" in capsys.readouterr().err
