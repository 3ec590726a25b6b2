"""The `clipart` builder on a tiny fake package tree (never the real Debian packages)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taskdistill.data import clipart
from taskdistill.data.clipart import ClipartRoots, build_clipart, ensure_clipart, read_record
from taskdistill.data.sources import load_dataset
from taskdistill.errors import DataError

CLASSES = {
    "cat": ("openclipart:animals/cats/**", "tuxpaint:animals/cats/**"),
    "car": ("openclipart:vehicles/*",),
}
SIDE = 32


def _drawing(seed: int, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    """A distinct RGBA drawing: a coloured rectangle on a transparent background."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    y0, x0 = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
    img[y0:y0 + size[1] // 2, x0:x0 + size[0] // 2] = [*rng.integers(0, 200, 3), 255]
    img[rng.integers(0, size[1]), rng.integers(0, size[0])] = [*rng.integers(0, 255, 3), 255]
    return img


def _save(path: Path, seed: int, **kwargs: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_drawing(seed), "RGBA").save(path, **kwargs)
    return path


@pytest.fixture()
def fake_packages(tmp_path: Path) -> ClipartRoots:
    """openclipart-like and tuxpaint-like trees: 6 + 2 cats, 5 cars, and the awkward cases."""
    oc, tp = tmp_path / "pkgs" / "openclipart" / "png", tmp_path / "pkgs" / "tuxpaint" / "stamps"
    for i in range(4):
        _save(oc / "animals" / "cats" / f"cat{i}.png", seed=i)
    for i in range(4, 6):
        _save(oc / "animals" / "cats" / "big" / f"cat{i}.png", seed=i)  # `**` takes subfolders
    for i in range(6, 8):
        _save(tp / "animals" / "cats" / f"stamp{i}.png", seed=i)
    for i in (0, 2, 3, 4):
        _save(oc / "vehicles" / f"car{i}.png", seed=100 + i)
    red = np.zeros((30, 40, 4), dtype=np.uint8)
    red[5:15, 12:32] = [200, 0, 0, 255]  # a 20 x 10 opaque rectangle on a transparent 40 x 30 canvas
    Image.fromarray(red, "RGBA").save(oc / "vehicles" / "car1.png")
    _save(oc / "vehicles" / "sub" / "not_taken.png", seed=200)  # `*` takes the folder's own files only
    shutil.copy(oc / "animals" / "cats" / "cat0.png", oc / "animals" / "cats" / "cat0_copy.png")  # same file
    (oc / "animals" / "cats" / "cat1_link.png").symlink_to("cat1.png")  # the package's symlinked copies
    _save(oc / "animals" / "cats" / "cat2_recompressed.png", seed=2, compress_level=1)  # same pixels, other bytes
    shutil.copy(oc / "vehicles" / "car0.png", oc / "animals" / "cats" / "catcar.png")  # in both classes
    (oc / "animals" / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return ClipartRoots(openclipart=oc, tuxpaint=tp)


def _build(out: Path, roots: ClipartRoots, workers: int = 1) -> dict:
    return build_clipart(out, roots, CLASSES, side=SIDE, test_per_class=2, min_train=1, workers=workers)


def _pixels(path: Path) -> str:
    return hashlib.sha256(np.asarray(Image.open(path)).tobytes()).hexdigest()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_builds_class_folders_with_a_fixed_test_share(fake_packages, tmp_path):
    record = _build(tmp_path / "out", fake_packages)
    root = tmp_path / "out"
    for split in ("train", "test"):
        assert sorted(p.name for p in (root / split).iterdir()) == ["car", "cat"]
    assert [len(list((root / "test" / c).glob("*.png"))) for c in ("car", "cat")] == [2, 2]
    # cats: 8 drawings (copies, the link and the re-encoded file are duplicates; catcar is ambiguous; broken is
    # unreadable); cars: 5 (car0 is ambiguous, sub/ is not taken)
    assert record["classes"]["cat"]["train"] + 2 == 8 and record["classes"]["car"]["train"] + 2 == 4
    assert len(list((root / "train" / "cat").glob("*.png"))) == 6
    assert record["images"] == {"train": 8, "test": 4}
    assert json.loads((root / "dataset.json").read_text()) == record == read_record(root)


def test_duplicates_ambiguous_and_unreadable_files_are_recorded(fake_packages, tmp_path):
    record = _build(tmp_path / "out", fake_packages)
    by_source = {s: f["file"] for f in record["files"] for s in f["sources"]}
    cat0 = by_source["openclipart/animals/cats/cat0.png"]
    assert by_source["openclipart/animals/cats/cat0_copy.png"] == cat0  # one image, both files listed
    assert by_source["openclipart/animals/cats/cat1_link.png"] == by_source["openclipart/animals/cats/cat1.png"]
    assert "openclipart/animals/cats/cat2_recompressed.png" not in by_source
    assert any(d.startswith("openclipart/animals/cats/cat2_recompressed.png (= ") for d in record["dropped"]["pixel_duplicates"])
    ambiguous = record["dropped"]["ambiguous"]
    assert "openclipart/animals/cats/catcar.png (car, cat)" in ambiguous
    assert "openclipart/vehicles/car0.png (car, cat)" in ambiguous
    assert list(record["dropped"]["unreadable"]) == ["openclipart/animals/cats/broken.png"]
    assert "openclipart/vehicles/sub/not_taken.png" not in by_source


def test_no_picture_in_both_splits_and_none_twice(fake_packages, tmp_path):
    _build(tmp_path / "out", fake_packages)
    train = [_pixels(p) for p in sorted((tmp_path / "out" / "train").rglob("*.png"))]
    test = [_pixels(p) for p in sorted((tmp_path / "out" / "test").rglob("*.png"))]
    assert not set(train) & set(test)
    assert len(set(train)) == len(train) and len(set(test)) == len(test)


def test_rgba_is_composited_on_white_cropped_and_fitted(fake_packages, tmp_path):
    record = _build(tmp_path / "out", fake_packages)
    file = next(f["file"] for f in record["files"] if "openclipart/vehicles/car1.png" in f["sources"])
    with Image.open(tmp_path / "out" / file) as im:
        assert im.mode == "RGB" and im.size == (SIDE, SIDE)
        arr = np.asarray(im)
    # cropped to the rectangle (20 x 10) and fitted: 32 x 16, centred, on white
    assert (arr[:8] == 255).all() and (arr[24:] == 255).all()
    assert (arr[9:23, :, 0] > 190).all() and (arr[9:23, :, 1:] < 10).all()


def test_the_split_is_stable_across_builds_locations_and_workers(fake_packages, tmp_path):
    _build(tmp_path / "a", fake_packages)
    moved = tmp_path / "elsewhere"
    shutil.copytree(fake_packages.openclipart.parent.parent, moved, symlinks=True)
    roots = ClipartRoots(openclipart=moved / "openclipart" / "png", tuxpaint=fake_packages.tuxpaint)
    _build(tmp_path / "b", roots, workers=2)  # and decoded by two processes
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_missing_packages_name_the_apt_get_command(fake_packages, tmp_path):
    with pytest.raises(DataError, match=r"openclipart-png, tuxpaint-stamps-default.*apt-get install openclipart-png "
                                        r"tuxpaint-stamps-default"):
        build_clipart(tmp_path / "out", ClipartRoots(tmp_path / "no" / "oc", tmp_path / "no" / "tp"))
    only_tux_missing = ClipartRoots(fake_packages.openclipart, tmp_path / "no" / "tp")
    with pytest.raises(DataError, match=r"package\(s\) tuxpaint-stamps-default \(looked"):
        ensure_clipart(tmp_path / "ds", only_tux_missing, CLASSES)
    assert not (tmp_path / "ds").exists()


def test_a_class_too_small_for_its_test_share_is_an_error(fake_packages, tmp_path):
    with pytest.raises(DataError, match=r"fewer than 4 test \+ 1 training images: \{'car': 4\}"):
        build_clipart(tmp_path / "out", fake_packages, CLASSES, side=SIDE, test_per_class=4, min_train=1, workers=1)


def test_ensure_builds_once_atomically_and_loads_as_a_builtin(fake_packages, tmp_path, monkeypatch):
    target = tmp_path / "ds"

    def crash(out: Path, *args: object, **kwargs: object) -> dict:
        (out / "train").mkdir(parents=True)
        (out / "train" / "half.png").write_bytes(b"")
        raise KeyboardInterrupt

    real_build = clipart.build_clipart
    monkeypatch.setattr(clipart, "build_clipart", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_clipart(target, fake_packages, CLASSES, side=SIDE, test_per_class=2, workers=1)
    assert not target.exists() and (tmp_path / ".ds.partial").is_dir()  # nothing half-written under the name

    calls = []
    monkeypatch.setattr(clipart, "build_clipart", lambda *a, **k: calls.append(1) or real_build(*a, **k, min_train=1))
    assert ensure_clipart(target, fake_packages, CLASSES, side=SIDE, test_per_class=2, workers=1) == target
    assert not (tmp_path / ".ds.partial").exists() and read_record(target) is not None
    ensure_clipart(target, fake_packages, CLASSES, side=SIDE, test_per_class=2, workers=1)
    assert calls == [1]  # built once

    data = load_dataset("clipart", str(target), policy=16)  # the built folder is read like any folder dataset
    assert data.class_names == ["car", "cat"]
    assert len(data.train) == 8 and len(data.test) == 4 and data.train.images.shape[1:] == (3, 16, 16)


def test_a_foreign_folder_is_not_overwritten(fake_packages, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="is not a built clipart dataset"):
        ensure_clipart(tmp_path / "mine", fake_packages, CLASSES)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_default_folder_is_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TASKDISTILL_CACHE_DIR", str(tmp_path))
    assert clipart.default_clipart_dir() == tmp_path / "datasets" / "clipart-v1"


def test_a_malformed_class_rule_is_an_error(fake_packages, tmp_path):
    with pytest.raises(DataError, match=r"rule 'clipart:animals' must look like"):
        build_clipart(tmp_path / "out", fake_packages, {"cat": ("clipart:animals",)}, workers=1)
