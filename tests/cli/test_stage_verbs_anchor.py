from pathlib import Path

from taskdistill.cli.main import main
from tests.conftest import tiny_overrides


def test_finetune_without_a_teacher_names_the_fix_when_stage_3_keeps_distilling(shapes_dataset, tmp_path: Path,
                                                                                   capsys):
    train, test = shapes_dataset
    sets = [a for o in [*tiny_overrides(train, test, tmp_path / "runs"), "num_threads=1"] for a in ("--set", o)]
    assert main(["finetune", *sets]) == 2  # the folder has no teacher and none is given
    assert "pass --teacher CKPT or run `taskdistill teacher-finetune`" in capsys.readouterr().err
    # a plain stage 3 does not need the teacher: the error is then the usual missing-stage one
    assert main(["finetune", *sets, "--set", "distill.finetune_anchor=0"]) == 2
    assert "stage 'student_distilled' has not run" in capsys.readouterr().err
