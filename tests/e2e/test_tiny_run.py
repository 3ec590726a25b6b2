"""End to end on tiny synthetic folders: every stage, the run folder, resume/force, bad inputs."""

import json

import pytest

from taskdistill.cli.main import main
from taskdistill.config import RunConfig, load_config
from taskdistill.engine.checkpoint import load_checkpoint
from taskdistill.errors import RunFolderError
from taskdistill.pipelines.run import run as run_task_oriented
from tests.conftest import tiny_overrides


def cfg_for(shapes_dataset, tmp_path, *extra):
    train, test = shapes_dataset
    return load_config(RunConfig, None, tiny_overrides(train, test, tmp_path / "runs") + list(extra))


def test_full_run_writes_a_self_describing_folder(shapes_dataset, tmp_path):
    cfg = cfg_for(shapes_dataset, tmp_path)
    result = run_task_oriented(cfg)
    run = tmp_path / "runs" / "tiny"
    for f in ("config.yaml", "run.json", "metrics.json", "report.md", "log.txt"):
        assert (run / f).is_file(), f
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "complete"
    assert set(state["stages"]) == {"teacher", "student_distilled", "student", "scratch"}
    for stage in state["stages"]:
        model, meta = load_checkpoint(run / "checkpoints" / stage, expect_classes=["bars", "circle", "cross"])
        assert meta["stage"] == stage and meta["config"]["name"] == "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    distill = metrics["stages"]["student_distilled"]["cost"]
    assert distill["details"]["transfer_images"] == 40 - 0 and distill["teacher_images"] == 80  # 40 images x 2 views
    assert [r["stage"] for r in result.rows] == ["teacher", "student_distilled", "student", "scratch"]
    assert "student after transfer" in (run / "report.md").read_text()
    assert not list(run.rglob("*.tmp"))


def test_existing_folder_needs_resume_or_force_and_resume_skips_finished_stages(shapes_dataset, tmp_path):
    cfg = cfg_for(shapes_dataset, tmp_path)
    run_task_oriented(cfg)
    with pytest.raises(RunFolderError, match="--resume.*--force"):
        run_task_oriented(cfg)
    run = tmp_path / "runs" / "tiny"
    before = (run / "checkpoints" / "student.safetensors").stat().st_mtime_ns
    run_task_oriented(cfg, mode="resume")
    assert (run / "checkpoints" / "student.safetensors").stat().st_mtime_ns == before
    assert "finished earlier" in (run / "log.txt").read_text()
    run_task_oriented(cfg, mode="force")
    assert (run / "checkpoints" / "student.safetensors").stat().st_mtime_ns != before


def test_second_run_reuses_the_teacher_output_cache(shapes_dataset, tmp_path):
    run_task_oriented(cfg_for(shapes_dataset, tmp_path))
    result = run_task_oriented(cfg_for(shapes_dataset, tmp_path, "name=again", "distill.train.epochs=2"))
    info = json.loads((result.path / "metrics.json").read_text())["stages"]["student_distilled"]["cost"]
    # The teacher finetune is deterministic on CPU, so the same teacher hits the same cache entry.
    assert info["details"]["cache"]["hit"] and info["teacher_images"] == 0


def test_bad_input_leaves_no_run_folder(shapes_dataset, tmp_path, capsys):
    train, test = shapes_dataset
    args = ["run"] + [a for o in tiny_overrides(train, test, tmp_path / "runs") for a in ("--set", o)]
    assert main(args + ["--set", "data.labels_per_class=31"]) == 2
    assert "fewer than data.labels_per_class=31" in capsys.readouterr().err
    assert main(args + ["--set", "student.model.name=resnet10" + "x"]) == 2
    assert "unknown model 'resnet10x'" in capsys.readouterr().err
    assert main(args + ["--set", "data.root=" + str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "runs" / "tiny").exists()


def test_stage_verbs_in_order_equal_a_run(shapes_dataset, tmp_path):
    train, test = shapes_dataset
    sets = [a for o in tiny_overrides(train, test, tmp_path / "runs") for a in ("--set", o)]
    assert main(["distill", *sets]) == 2  # no teacher yet: a clear error
    assert main(["teacher-finetune", *sets]) == 0
    assert main(["distill", *sets]) == 0
    assert main(["finetune", *sets]) == 0
    state = json.loads((tmp_path / "runs" / "tiny" / "run.json").read_text())
    assert {"teacher", "student_distilled", "student"} <= set(state["stages"])
    ck = tmp_path / "runs" / "tiny" / "checkpoints" / "student"
    assert main(["evaluate", str(ck), *sets]) == 0
    img = sorted(test.rglob("*.png"))[0]
    assert main(["predict", str(ck), str(img), "--json"]) == 0


def test_validation_split_is_carved_from_the_labels_and_evaluated(shapes_dataset, tmp_path):
    cfg = cfg_for(shapes_dataset, tmp_path, "data.val_per_class=1", "run.methods=[task-oriented]")
    result = run_task_oriented(cfg)
    metrics = json.loads((result.path / "metrics.json").read_text())
    assert metrics["data"]["labeled"] == 9 and metrics["data"]["val"] == 3
    assert metrics["stages"]["student"]["val"]["num_images"] == 3
    assert "scratch" not in metrics["stages"]


def test_evaluate_and_predict_replay_the_checkpoints_decode_policy(tmp_path, capsys):
    """Non-square images larger than the student's input: the run decodes them once at the teacher's size
    (crop policy), and `evaluate` without a config (the checkpoint's own) reports the run's exact figure."""
    import numpy as np
    from PIL import Image

    from tests.conftest import CLASSES, draw

    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 8)):
        for kind in CLASSES:
            (tmp_path / split / kind).mkdir(parents=True)
            for i in range(n):
                wide = np.concatenate([draw(kind, rng), rng.integers(0, 60, (20, 12, 3)).astype(np.uint8)], 1)
                Image.fromarray(wide).resize((64, 40)).save(tmp_path / split / kind / f"{i}.png")
    cfg = load_config(RunConfig, None, tiny_overrides(tmp_path / "train", tmp_path / "test", tmp_path / "runs")
                      + ["teacher.model.input_size=24", "data.labels_per_class=4"])
    run_task_oriented(cfg)
    run = tmp_path / "runs" / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    _, meta = load_checkpoint(run / "checkpoints" / "student")
    assert meta["decode"] == {"size": 24, "resize": "crop", "crop_pct": 1.0, "interpolation": "bicubic",
                              "color": "rgb", "jpeg_draft": True}
    assert main(["evaluate", str(run / "checkpoints" / "student"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["top1"] == metrics["stages"]["student"]["test"]["top1"] and got["num_images"] == 24
    # predict: the same 24-px crop, then the model's own resize (not a 16-px squash of the file)
    import torch

    from taskdistill.data.decode import DecodePolicy
    from taskdistill.data.sources import decode_image
    from taskdistill.engine.evaluate import predict_logits

    image = tmp_path / "test" / "circle" / "0.png"
    model, _ = load_checkpoint(run / "checkpoints" / "student")
    want = predict_logits(model, decode_image(image, DecodePolicy(24))[None], progress=False).softmax(1)[0]
    squashed = predict_logits(model, decode_image(image, DecodePolicy(16, resize="squash"))[None],
                              progress=False).softmax(1)[0]
    assert main(["predict", str(run / "checkpoints" / "student"), str(image), "--json", "--top-k", "3"]) == 0
    top = json.loads(capsys.readouterr().out)["top"]
    got = torch.tensor([next(t["prob"] for t in top if t["class"] == c) for c in CLASSES])
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(got, squashed, atol=1e-4)


def test_unwritable_output_and_cache_folders_fail_before_any_training(shapes_dataset, tmp_path, capsys):
    train, test = shapes_dataset
    (tmp_path / "file").write_text("x")
    args = ["run"] + [a for o in tiny_overrides(train, test, tmp_path / "file" / "runs") for a in ("--set", o)]
    assert main(args + ["--set", f"distill.cache_dir={tmp_path / 'file' / 'cache'}"]) == 2
    err = capsys.readouterr().err
    assert "output_dir '" in err and "distill.cache_dir '" in err and "is not writable" in err
    assert "Traceback" not in err
