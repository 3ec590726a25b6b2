"""`torchrun --nproc_per_node 2 taskdistill ...` on the CPU (gloo), against the same verbs in one process.

The distillation stage, from the same finetuned teacher on the same data, is run once in one process and
once under torchrun with 2 processes. What must agree, and how closely:
- the teacher-output cache: byte-identical (the 2 processes split the batches, rank 0 writes);
- steps, images seen, teacher forwards: equal (the global batch is split, not doubled);
- the distilled student's test top-1 and macro accuracy: within TOLERANCE, and its KL divergence from the
  teacher on the test images (eval mode, T = 2) within KL_TOLERANCE. Batch-norm layers normalise each
  rank's half batch with its own statistics, so the trajectories differ slightly (a BN-free model matches
  to 1e-5: tests/engine/test_distributed.py).
Then the folder made by 2 processes is continued (`finetune`) by 1 process: resume across world sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

from taskdistill.cli.main import main
from taskdistill.data.sources import load_dataset
from taskdistill.engine.checkpoint import load_checkpoint
from taskdistill.engine.evaluate import predict_logits
from taskdistill.losses.kd import kd_kl_loss
from tests.conftest import make_folder, tiny_overrides
from tests.distributed_helpers import torchrun

TOLERANCE = 0.05  # test top-1 / macro accuracy (60 images): at most 3 images apart
KL_TOLERANCE = 0.1  # measured: 0.279 vs 0.283 on the training images
# A teacher that learns the shapes (full finetune at a usable rate), 96 transfer images, 18 distill steps.
SETUP = ["num_threads=1", "data.labels_per_class=8", "teacher.mode=finetune", "teacher.train.lr=3e-3",
         "teacher.train.freeze_bn=false", "teacher.train.epochs=6", "distill.transfer.max_images=96",
         "distill.train.epochs=3"]


def _files(root: Path, suffix: str) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob(f"*{suffix}"))}


def test_distill_under_torchrun_matches_one_process_and_resumes_in_one(tmp_path: Path) -> None:
    train, test = make_folder(tmp_path / "train", 40, seed=0), make_folder(tmp_path / "test", 20, seed=1)
    base = tiny_overrides(train, test, tmp_path / "runs") + SETUP

    def sets(*extra: str) -> list[str]:
        return [a for o in [*base, *extra] for a in ("--set", o)]

    assert main(["teacher-finetune", *sets()]) == 0
    teacher = str(tmp_path / "runs" / "tiny" / "checkpoints" / "teacher")
    one_sets = sets("name=one", f"distill.cache_dir={tmp_path / 'cache1'}")
    two_sets = sets("name=two", f"distill.cache_dir={tmp_path / 'cache2'}")
    assert main(["distill", "--teacher", teacher, *one_sets]) == 0
    proc = torchrun(2, ["distill", "--teacher", teacher, *two_sets], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("run folder:") == 1  # rank 0 prints, rank 1 is quiet

    one, two = (json.loads((tmp_path / "runs" / n / "run.json").read_text())["stages"]["student_distilled"]
                for n in ("one", "two"))
    c1, c2 = one["cost"], two["cost"]
    assert c1["fit"]["steps"] == c2["fit"]["steps"] and c1["details"]["transfer_images"] == c2["details"]["transfer_images"]
    for key in ("student_images", "teacher_images"):
        assert c1[key] == c2[key], key
    assert abs(one["test"]["top1"] - two["test"]["top1"]) <= TOLERANCE, (one["test"], two["test"])
    assert abs(one["test"]["macro_accuracy"] - two["test"]["macro_accuracy"]) <= TOLERANCE
    assert one["test"]["num_images"] == two["test"]["num_images"] == 60
    assert min(one["test"]["top1"], two["test"]["top1"]) >= 0.8  # a comparison of students that learned
    teacher_model, _ = load_checkpoint(teacher)
    test_images = load_dataset("folder", str(train), str(test), 16, "fail", False).test.images
    target = predict_logits(teacher_model, test_images, progress=False)
    kl = [float(kd_kl_loss(predict_logits(load_checkpoint(tmp_path / "runs" / n / "checkpoints" / "student_distilled")[0],
                                          test_images, progress=False), target, 2.0)) for n in ("one", "two")]
    assert abs(kl[0] - kl[1]) <= KL_TOLERANCE, kl
    cache1, cache2 = _files(tmp_path / "cache1", ".npy"), _files(tmp_path / "cache2", ".npy")
    assert cache1 and cache1 == cache2

    # one process continues the 2-process folder; stage 3 keeps distilling, so it reads the given teacher
    assert main(["finetune", "--teacher", teacher, *two_sets]) == 0
    state = json.loads((tmp_path / "runs" / "two" / "run.json").read_text())
    assert {"student_distilled", "student"} <= set(state["stages"]) and state["stages"]["student"]["cost"]["fit"]["steps"] > 0
