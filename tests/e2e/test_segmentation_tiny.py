"""Segmentation end to end on tiny models: every method in a sweep, a run folder, predict and evaluate."""

import json

import numpy as np
import pytest
from PIL import Image

from taskdistill.cli.common import shipped_configs
from taskdistill.cli.main import main
from taskdistill.config import RunConfig, load_config
from taskdistill.errors import ConfigError
from taskdistill.pipelines.sweep import run_sweep

METHODS = ["scratch", "pretrained-finetune", "task-agnostic", "task-oriented", "teacher-finetune"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache folder for the module: the composite canvases are drawn once."""
    return tmp_path_factory.mktemp("seg-cache")


def tiny_args(tmp_path, cache):
    return [f"output_dir={tmp_path / 'runs'}", f"distill.cache_dir={cache}", "num_threads=1"]


def test_every_segmentation_method_runs_in_a_sweep(tmp_path, shared_cache):
    cfg = load_config(RunConfig, shipped_configs()["seg-tiny"], tiny_args(tmp_path, shared_cache))
    records = run_sweep(cfg, METHODS, budgets=[6], seeds=[0], folder=tmp_path / "sweep")
    by = {r["method"]: r for r in records}
    assert set(by) == set(METHODS)
    for r in records:
        assert 0.0 <= r["miou"] <= 1.0 and 0.0 <= r["pixel_accuracy"] <= 1.0 and r["budget"] == 6
        assert set(r["per_class_iou"]) == set(json.loads((tmp_path / "sweep" / "results.json").read_text())[0]
                                              ["per_class_iou"])
    assert by["scratch"]["teacher_images"] == 0 and by["scratch"]["model"] == "seg:tf_efficientnet_lite0"
    assert by["task-oriented"]["teacher_images"] > 0 and by["task-agnostic"]["teacher_gflops"] > 0
    assert len(list((tmp_path / "sweep" / "teachers").glob("*.safetensors"))) == 1  # shared teacher
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "6 labeled images" in report and "`miou`" in report
    with pytest.raises(ConfigError, match="not available for task: segmentation"):
        run_sweep(cfg, ["tdmr"], [6], [0], tmp_path / "other")


def test_run_folder_then_predict_writes_colour_coded_masks(tmp_path, shared_cache, capsys):
    sets = [f"--set={a}" for a in tiny_args(tmp_path, shared_cache)]
    assert main(["run", "seg-tiny", *sets]) == 0
    run = tmp_path / "runs" / "seg-tiny"
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "complete"
    assert set(state["stages"]) == {"teacher", "student_distilled", "student", "scratch"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "segmentation" and 0.0 <= metrics["rows"][0]["test"]["miou"] <= 1.0
    assert "mIoU" in (run / "report.md").read_text()

    rng = np.random.default_rng(0)
    images = []
    for i, (w, h) in enumerate([(40, 30), (32, 32)]):
        images.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images[-1])
    out = tmp_path / "pred"
    capsys.readouterr()
    assert main(["predict", str(run / "checkpoints" / "student"), *map(str, images), "--out", str(out), "--overlay"]) == 0
    printed = capsys.readouterr().out
    assert "img0_mask.png" in printed and "colours: background #000000" in printed
    with Image.open(out / "img0_mask.png") as mask:
        assert mask.mode == "P" and mask.size == (40, 30)  # the image's own size
        assert int(np.asarray(mask).max()) < 11  # class indices
    assert (out / "img1_overlay.png").is_file()

    assert main(["evaluate", str(run / "checkpoints" / "student"), "seg-tiny", *sets]) == 0
    assert "mIoU" in capsys.readouterr().out
