"""Shared fixtures: tiny synthetic image folders and a fast config for end-to-end runs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taskdistill.engine.device import set_threads

# One intra-op thread by default: the tests' models are tiny, and several processes with two threads each on
# a small machine stall on each other's barriers (measured: 0.6 s vs 25 s per step). TASKDISTILL_TEST_THREADS
# overrides it (0: every CPU, as the CLI does).
set_threads(int(os.environ.get("TASKDISTILL_TEST_THREADS", "1")) or None)
# Image stores built by tests go to a folder of this session, never the user's ~/.cache (child processes inherit it).
os.environ["TASKDISTILL_CACHE_DIR"] = tempfile.mkdtemp(prefix="taskdistill-test-cache-")

CLASSES = ("bars", "circle", "cross")


def draw(kind: str, rng: np.random.Generator, size: int = 20) -> np.ndarray:
    """A noisy 20x20 RGB drawing of one of three shapes, at a random offset."""
    img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    c = size // 2 + rng.integers(-2, 3, 2)
    yy, xx = np.mgrid[:size, :size]
    color = np.array([230, 200, 60]) if kind == "bars" else np.array([60, 200, 230]) if kind == "circle" else np.array(
        [220, 80, 200])
    if kind == "bars":
        mask = (xx % 6 < 3) & (abs(yy - c[0]) < 7)
    elif kind == "circle":
        mask = ((yy - c[0]) ** 2 + (xx - c[1]) ** 2) < 30
    else:
        mask = (abs(yy - c[0]) < 2) | (abs(xx - c[1]) < 2)
    img[mask] = color
    return img


def make_folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(draw(kind, rng)).save(root / kind / f"{i:03d}.png")
    return root


@pytest.fixture()
def shapes_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """train/ (30 per class) and test/ (10 per class) folders of three shape classes."""
    return make_folder(tmp_path / "train", 30, seed=0), make_folder(tmp_path / "test", 10, seed=1)


def tiny_overrides(train: Path, test: Path, out: Path) -> list[str]:
    """A run that finishes in seconds: small random timm models at 16 px, a few steps per stage."""
    return [
        "data.dataset=folder", f"data.root={train}", f"data.test_root={test}", "data.labels_per_class=4",
        f"output_dir={out}", "name=tiny", "eval_batch_size=64",
        "teacher.model.name=resnet10t", "teacher.model.pretrained=false", "teacher.model.input_size=16",
        "teacher.probe.epochs=2", "teacher.probe.min_steps=0", "teacher.train.epochs=2", "teacher.train.batch_size=8",
        "student.model.name=resnet10t", "student.model.input_size=16",
        "distill.train.epochs=1", "distill.train.batch_size=16", "distill.transfer.max_images=40",
        "distill.transfer.views=2",
        "student.finetune.epochs=1", "student.finetune.min_steps=0", "student.finetune.batch_size=8",
        "student.scratch.epochs=1", "student.scratch.min_steps=0", "student.scratch.batch_size=8",
        "student.pretrained_finetune.epochs=1", "student.pretrained_finetune.min_steps=0",
        "student.pretrained_finetune.batch_size=8", "feature_distill.train.epochs=1",
        "tdmr.reprogram.epochs=1", "tdmr.reprogram.min_steps=0", "tdmr.distill.epochs=1", "tdmr.evaluate_teacher=false",
    ]


def make_cell(cfg, tmp_path: Path):
    """A sweep-style grid cell of `cfg` on the CPU (teachers stored under `tmp_path/teachers`)."""
    from taskdistill.engine.device import resolve_device
    from taskdistill.kinds import kind_of
    from taskdistill.pipelines.cell import Cell
    from taskdistill.pipelines.sweep import SweepStages

    kind = kind_of(cfg)
    data = kind.prepare(cfg)
    return Cell(cfg, kind, data, resolve_device("cpu"), tmp_path / "cache",
                SweepStages(cfg, kind, data, tmp_path / "teachers"))
