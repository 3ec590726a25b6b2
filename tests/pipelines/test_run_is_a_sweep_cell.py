"""`taskdistill run` is one sweep cell: the same recipes, seeds and cache keys give the same figures."""

import json

import pytest

from taskdistill.cli.main import main
from tests.conftest import tiny_overrides


@pytest.mark.parametrize("seed", [0, 1])
def test_run_and_a_one_cell_sweep_print_identical_figures(shapes_dataset, tmp_path, seed):
    train, test = shapes_dataset
    sets = [a for o in tiny_overrides(train, test, tmp_path / "runs") + [f"seed={seed}"] for a in ("--set", o)]
    assert main(["run", *sets]) == 0
    assert main(["sweep", *sets, "--seeds", str(seed), "--budgets", "4", "--methods", "task-oriented,scratch",
                 "--out", str(tmp_path / "sweep")]) == 0
    run = json.loads((tmp_path / "runs" / "tiny" / "metrics.json").read_text())
    ran = {r["method"]: r for r in run["methods"]}
    assert set(ran) == {"task-oriented", "scratch"}
    for method in ("task-oriented", "scratch"):
        cell = json.loads((tmp_path / "sweep" / "cells" / f"{method}__b4__s{seed}.json").read_text())
        assert cell["seed"] == ran[method]["seed"] == seed
        for key in ("top1", "macro_accuracy", "per_class_accuracy", "teacher_images", "student_images"):
            assert cell[key] == ran[method][key], (method, key)
    # the run's stage rows carry the same figures as its method records
    rows = {r["stage"]: r for r in run["rows"]}
    assert rows["student"]["test"]["top1"] == ran["task-oriented"]["top1"]
    assert rows["scratch"]["test"]["top1"] == ran["scratch"]["top1"]
