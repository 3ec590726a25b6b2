"""A run interrupted in the middle of distillation resumes from the stage's mid-stage checkpoint (not from the
stage's start) and ends with the same figures as a run that was never interrupted."""

import json

import pytest

from taskdistill.config import RunConfig, load_config
from taskdistill.pipelines.run import run
from taskdistill.tasks.distill import DistillTask
from tests.conftest import tiny_overrides


def cfg_for(shapes_dataset, tmp_path, name):
    train, test = shapes_dataset
    return load_config(RunConfig, None, tiny_overrides(train, test, tmp_path / "runs") + [
        f"name={name}", "distill.train.epochs=3", "distill.train.batch_size=4", "log.every_steps=1",
        "execution.checkpoint_minutes=0.000001"])  # a mid-stage checkpoint at every step


def figures(folder):
    stages = json.loads((folder / "run.json").read_text())["stages"]
    return {s: (info["test"]["top1"], info["test"]["per_class_accuracy"]) for s, info in stages.items()}


def test_interrupted_distillation_resumes_mid_stage_with_the_same_figures(shapes_dataset, tmp_path, monkeypatch):
    reference = run(cfg_for(shapes_dataset, tmp_path, "whole"))
    calls = {"n": 0}
    real = DistillTask.__call__

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 17:  # mid-way: epoch 2 of 3 (10 steps per epoch)
            raise KeyboardInterrupt("killed")
        return real(self, batch)

    monkeypatch.setattr(DistillTask, "__call__", interrupted)
    cfg = cfg_for(shapes_dataset, tmp_path, "cut")
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    folder = tmp_path / "runs" / "cut"
    assert (folder / "stages" / "student_distilled" / "train_state.pt").is_file()
    assert "student_distilled" not in json.loads((folder / "run.json").read_text())["stages"]
    calls["n"] = 0
    monkeypatch.setattr(DistillTask, "__call__", lambda self, batch: (calls.__setitem__("n", calls["n"] + 1),
                                                                      real(self, batch))[1])
    run(cfg, mode="resume")
    assert 0 < calls["n"] < 30  # continued where it stopped, not from step 0 (30 steps in all)
    assert not (folder / "stages" / "student_distilled" / "train_state.pt").exists()  # removed when it finished
    assert figures(folder) == figures(reference.path)
