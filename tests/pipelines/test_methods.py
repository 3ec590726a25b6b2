"""Method recipes that need no training to check: which config each stage receives."""

from types import SimpleNamespace

import pytest

from taskdistill.config import RunConfig, load_config
from taskdistill.pipelines import methods


@pytest.mark.parametrize("pretrained, override, expected", [
    (True, "0.0005", 0.0005), (True, None, 0.002), (False, "0.0005", 0.002)])
def test_pretrained_student_gets_its_own_distillation_lr(pretrained, override, expected):
    sets = ["distill.train.lr=0.002"] + ([f"distill.pretrained_student_lr={override}"] if override else [])
    cfg = load_config(RunConfig, None, sets)
    seen = {}

    def fake_distill(name, title, student, teacher, dcfg, meter):
        seen["lr"], seen["distill_stage"] = dcfg.train.lr, name

    def fake_finetune(name, title, student, teacher, meter, chain=(), hard_labels=False):
        seen["final_stage"], seen["chain"], seen["anchor_teacher"] = name, chain, teacher

    cell = SimpleNamespace(cfg=cfg, distill=fake_distill, finetune=fake_finetune,
                           finetuned_teacher=lambda meter: "teacher", student=lambda pretrained=False: "student",
                           record=lambda name, *a: {"method": name})
    methods._task_oriented(cell, pretrained, "x")
    assert seen["lr"] == pytest.approx(expected)
    # the run folder's stage names: task-oriented keeps `student_distilled` -> `student`
    assert (seen["distill_stage"], seen["final_stage"]) == (("x.distilled", "x") if pretrained
                                                             else ("student_distilled", "student"))
    assert seen["chain"] == (seen["distill_stage"],)
    assert seen["anchor_teacher"] == "teacher"  # stage 3 keeps distilling from the teacher stage 2 used
