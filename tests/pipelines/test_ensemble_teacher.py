"""An ensemble teacher (`teacher.ensemble`) end to end: trained member by member in the run folder, cached,
distilled, reloaded on --resume with identical outputs, and the same figures in a one-cell sweep."""

import json

import pytest
import torch

from taskdistill.cache.teacher_outputs import cache_key
from taskdistill.config import RunConfig, load_config
from taskdistill.engine.checkpoint import load_checkpoint
from taskdistill.kinds import kind_of
from taskdistill.kinds.classification import Classification, storage_of
from taskdistill.models.ensemble import EnsembleTeacher
from taskdistill.pipelines.run import run
from taskdistill.pipelines.sweep import cell_path, run_sweep
from taskdistill.tasks.distill import DistillTask
from tests.conftest import tiny_overrides

MEMBER = "teacher.ensemble=[{name: resnet10t, input_size: 24}]"  # + teacher.model (resnet10t at 16 px)


def cfg_for(shapes_dataset, tmp_path, name, *extra):
    train, test = shapes_dataset
    return load_config(RunConfig, None, tiny_overrides(train, test, tmp_path / "runs") + [
        f"name={name}", MEMBER, "run.methods=teacher-finetune,task-oriented", *extra])


def scores(test):
    return {k: v for k, v in test.items() if k != "seconds"}


def stages(folder):
    return json.loads((folder / "run.json").read_text())["stages"]


def test_ensemble_teacher_runs_resumes_and_matches_a_sweep_cell(shapes_dataset, tmp_path, monkeypatch):
    cfg = cfg_for(shapes_dataset, tmp_path, "whole")
    whole = run(cfg)
    info = stages(whole.path)
    teacher = info["teacher"]
    assert teacher["model"] == "ensemble:resnet10t+resnet10t"
    members = teacher["cost"]["details"]["members"]
    assert [m["model"] for m in members] == ["resnet10t", "resnet10t"]
    per_member = [m["probe"]["images"] + m["finetune"]["images"] for m in members]
    assert teacher["cost"]["teacher_images"] == sum(per_member) and min(per_member) > 0
    for i in (0, 1):  # each member's parts keep their own files (mid-stage checkpoints would not collide)
        for part in ("probe", "finetune"):
            assert (whole.path / "stages" / "teacher" / f"member{i}" / part / "scalars.csv").is_file(), (i, part)

    # the stored teacher is the ensemble: rebuilt from its checkpoint it gives the outputs the run cached
    loaded, meta = load_checkpoint(whole.path / "checkpoints" / "teacher")
    assert isinstance(loaded, EnsembleTeacher) and [m.preprocess.input_size for m in loaded.members] == [16, 24]
    assert loaded.temperature == cfg.distill.temperature
    data = kind_of(cfg).prepare(cfg)
    assert data.transfer.images[torch.arange(1)].shape[-1] == 24  # stored at the largest member's side
    key = cache_key(loaded, data.transfer, cfg.distill.transfer.views, cfg.seed, "logits", storage_of(cfg.distill))
    assert info["student_distilled"]["cost"]["details"]["cache"]["key"] == key
    test = Classification().evaluate(loaded, data.test, torch.device("cpu"), 64, "evaluate")
    assert test.scores["top1"] == teacher["test"]["top1"]

    # interrupted in distillation, resumed: the teacher is loaded (not retrained) and the figures are the same
    cut = cfg_for(shapes_dataset, tmp_path, "cut")
    real = DistillTask.__call__

    def killed(self, batch):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(DistillTask, "__call__", killed)
    with pytest.raises(KeyboardInterrupt):
        run(cut)
    monkeypatch.setattr(DistillTask, "__call__", real)

    def retrained(*a, **k):
        raise AssertionError("the finished teacher stage was trained again")

    monkeypatch.setattr(Classification, "train_teacher", retrained)
    resumed = run(cut, mode="resume")
    again = stages(resumed.path)
    for s in ("teacher", "student_distilled", "student"):
        assert scores(again[s]["test"]) == scores(info[s]["test"]), s
    assert again["student_distilled"]["cost"]["details"]["cache"]["key"] == key

    # a one-cell sweep: the same figures; the stored teacher is shared by the methods; task-agnostic runs too
    monkeypatch.undo()
    run_sweep(cfg, ["teacher-finetune", "task-oriented", "task-agnostic"], budgets=[4], seeds=[0],
              folder=tmp_path / "sweep")
    ran = {r.method: r for r in whole.records}
    for method in ("teacher-finetune", "task-oriented"):
        cell = json.loads(cell_path(tmp_path / "sweep", method, 4, 0).read_text())
        for k in ("top1", "per_class_accuracy", "teacher_images", "student_images"):
            assert cell[k] == ran[method].to_json()[k], (method, k)
    assert len(list((tmp_path / "sweep" / "teachers").glob("*.safetensors"))) == 1
    agnostic = json.loads(cell_path(tmp_path / "sweep", "task-agnostic", 4, 0).read_text())
    assert agnostic["teacher_images"] > 0 and agnostic["teacher_gflops"] > 0
