"""Method recipes that need no training to check: which config each stage receives."""

from types import SimpleNamespace

import pytest

from taskdistill.config import RunConfig, load_config
from taskdistill.pipelines import methods


@pytest.mark.parametrize("pretrained, override, expected", [
    (True, "0.0005", 0.0005), (True, None, 0.002), (False, "0.0005", 0.002)])
def test_pretrained_student_gets_its_own_distillation_lr(monkeypatch, pretrained, override, expected):
    sets = ["distill.train.lr=0.002"] + ([f"distill.pretrained_student_lr={override}"] if override else [])
    cfg = load_config(RunConfig, None, sets)
    seen = {}

    def fake_distill(student, teacher, dcfg):
        seen["lr"] = dcfg.train.lr
        return {"cache": {"seconds": 0.0}, "teacher_images": 0, "seconds": 0.0, "images": 0}

    monkeypatch.setattr(methods, "_with_teacher", lambda cell, meter: "teacher")
    monkeypatch.setattr(methods, "_finetune", lambda *a, **k: None)
    cell = SimpleNamespace(cfg=cfg, distill=fake_distill, student=lambda pretrained=False: "student",
                           record=lambda name, *a: {"method": name})
    methods._task_oriented(cell, pretrained, "x")
    assert seen["lr"] == pytest.approx(expected)
