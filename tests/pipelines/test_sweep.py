"""Sweeps on tiny synthetic data: every method runs, cells resume, the report is written."""

import json

import pytest

from taskdistill.config import RunConfig, load_config
from taskdistill.errors import ConfigError
from taskdistill.pipelines import methods as methods_mod
from taskdistill.pipelines.sweep import cell_path, run_sweep
from tests.conftest import tiny_overrides

ALL = list(methods_mod.METHODS)


def tiny_cfg(shapes_dataset, tmp_path, *extra):
    train, test = shapes_dataset
    return load_config(RunConfig, None, tiny_overrides(train, test, tmp_path / "runs") + [
        "feature_distill.train.epochs=1", "feature_distill.train.batch_size=16",
        # a student with packaged ImageNet weights, so pretrained-finetune is real
        "student.model.name=tf_efficientnet_lite0", "student.model.input_size=16", *extra])


def test_every_method_runs_and_records_its_cost(shapes_dataset, tmp_path):
    cfg = tiny_cfg(shapes_dataset, tmp_path)
    records = run_sweep(cfg, ALL, budgets=[3], seeds=[0], folder=tmp_path / "sweep")
    by = {r["method"]: r for r in records}
    assert set(by) == set(ALL)
    for r in records:
        assert 0.0 <= r["top1"] <= 1.0 and r["seconds"] > 0 and r["budget"] == 3
    assert by["scratch"]["teacher_images"] == 0
    assert by["task-oriented"]["teacher_images"] > 0 and by["task-oriented"]["student_images"] > 0
    assert by["task-agnostic"]["teacher_gflops"] > 0
    assert by["teacher-finetune"]["model"] == "resnet10t"
    # one teacher finetune per (budget, seed), shared by teacher-finetune and both task-oriented methods
    assert len(list((tmp_path / "sweep" / "teachers").glob("*.safetensors"))) == 1
    for f in ("results.json", "results.csv", "report.md", "report.html", "accuracy_vs_labels.png"):
        assert (tmp_path / "sweep" / f).is_file(), f


def test_killed_sweep_resumes_without_recomputing_finished_cells(shapes_dataset, tmp_path, monkeypatch):
    cfg = tiny_cfg(shapes_dataset, tmp_path)
    calls: list[str] = []
    real = dict(methods_mod.METHODS)

    def counting(name, fail=False):
        def run(cell):
            calls.append(name)
            if fail:
                raise KeyboardInterrupt  # the sweep is killed while this cell runs
            return real[name](cell)
        return run

    monkeypatch.setitem(methods_mod.METHODS, "scratch", counting("scratch"))
    monkeypatch.setitem(methods_mod.METHODS, "task-oriented", counting("task-oriented", fail=True))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, ["scratch", "task-oriented"], [3], [0], tmp_path / "sweep")
    assert cell_path(tmp_path / "sweep", "scratch", 3, 0).is_file()
    assert not cell_path(tmp_path / "sweep", "task-oriented", 3, 0).is_file()
    assert not list((tmp_path / "sweep" / "cells").glob("*.tmp"))

    calls.clear()
    monkeypatch.setitem(methods_mod.METHODS, "task-oriented", counting("task-oriented"))
    records = run_sweep(cfg, ["scratch", "task-oriented"], [3], [0], tmp_path / "sweep")
    assert calls == ["task-oriented"]  # the finished cell was not recomputed
    assert [r["method"] for r in records] == ["scratch", "task-oriented"]
    calls.clear()
    run_sweep(cfg, ["scratch", "task-oriented"], [3], [0], tmp_path / "sweep")
    assert calls == []


def test_the_report_covers_every_finished_cell_of_the_folder(shapes_dataset, tmp_path):
    cfg = tiny_cfg(shapes_dataset, tmp_path)
    run_sweep(cfg, ["scratch"], [3], [0], tmp_path / "sweep")
    (tmp_path / "sweep" / "cells" / "backup__b3__s0.json").write_text("{}")  # no such method: not a cell
    records = run_sweep(cfg, ["scratch"], [3], [1], tmp_path / "sweep")  # e.g. a second process, another seed
    assert [(r["method"], r["seed"]) for r in records] == [("scratch", 1)]  # the call returns its own grid
    shown = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in shown) == [("scratch", 0), ("scratch", 1)]
    assert "2 distinct" in (tmp_path / "sweep" / "report.md").read_text()


def test_sweep_refuses_another_config_and_unknown_methods(shapes_dataset, tmp_path):
    cfg = tiny_cfg(shapes_dataset, tmp_path)
    run_sweep(cfg, ["scratch"], [3], [0], tmp_path / "sweep")
    other = tiny_cfg(shapes_dataset, tmp_path, "student.scratch.lr=0.1")
    from taskdistill.errors import RunFolderError

    with pytest.raises(RunFolderError, match=r"another config \(student\.scratch\.lr: [0-9.e-]+ there, 0\.1 now\)"
                       r".*--set student\.scratch\.lr=") as refused:
        run_sweep(other, ["scratch"], [3], [0], tmp_path / "sweep")
    suggested = str(refused.value).split("(e.g. ")[1].split(")")[0].removeprefix("--set ")
    run_sweep(tiny_cfg(shapes_dataset, tmp_path, "student.scratch.lr=0.1", suggested), ["scratch"], [3], [0],
              tmp_path / "sweep")  # the suggested --set continues the folder
    with pytest.raises(ConfigError, match="Did you mean 'task-oriented'"):
        run_sweep(cfg, ["task-orientd"], [3], [0], tmp_path / "sweep2")
    rec = json.loads(cell_path(tmp_path / "sweep", "scratch", 3, 0).read_text())
    assert rec["method"] == "scratch"
