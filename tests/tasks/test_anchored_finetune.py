import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import model_input
from taskdistill.engine.batches import AnchoredBatches, ImageBatches, ViewBatches, transfer_part
from taskdistill.models.registry import create_model
from taskdistill.tasks.anchored_finetune import AnchoredFinetuneTask
from taskdistill.tasks.distill import DistillTask
from taskdistill.tasks.pseudo_label import PseudoLabelTask
from taskdistill.tasks.supervised import SupervisedTask


def _sets(n_labeled: int = 8, n_transfer: int = 20) -> tuple[ImageSet, ImageSet]:
    g = torch.Generator().manual_seed(0)
    names = ["a", "b", "c", "d"]
    labeled = ImageSet(torch.randint(0, 255, (n_labeled, 1, 16, 16), dtype=torch.uint8, generator=g),
                       torch.arange(n_labeled) % 4, [f"l{i}" for i in range(n_labeled)], names)
    transfer = ImageSet(torch.randint(0, 255, (n_transfer, 1, 16, 16), dtype=torch.uint8, generator=g),
                        torch.full((n_transfer,), -1), [f"t{i}" for i in range(n_transfer)], names)
    return labeled, transfer


def test_anchored_batches_attach_replayable_transfer_rows():
    labeled, transfer = _sets()
    src = AnchoredBatches(ImageBatches(labeled), ViewBatches(transfer, 2, seed=3), transfer_batch=5, seed=3)
    assert len(src) == len(labeled)
    a = src.batch(torch.tensor([0, 1, 2]), epoch=0)
    again = src.batch(torch.tensor([0, 1, 2]), epoch=0)
    later = src.batch(torch.tensor([0, 1, 2]), epoch=1)
    assert a["images"].shape[0] == 3 and a["transfer_images"].shape[0] == 5
    assert torch.equal(a["transfer_indices"], again["transfer_indices"])  # no state: a resumed run draws the same
    assert not torch.equal(a["transfer_indices"], later["transfer_indices"])
    part = transfer_part(a)
    assert set(part) == {"images", "labels", "indices", "views"}
    assert torch.equal(part["images"], transfer.images[a["transfer_indices"]])


@pytest.mark.parametrize("hard", [False, True])
def test_loss_is_the_labels_loss_plus_the_weighted_distillation_loss(hard):
    torch.manual_seed(0)
    labeled, transfer = _sets()
    student = create_model("resnet10t", 4, input_size=16).eval()
    logits = torch.randn(len(transfer), 2, 4)
    src = AnchoredBatches(ImageBatches(labeled), ViewBatches(transfer, 2, seed=0), transfer_batch=6, seed=0)
    batch = src.batch(torch.arange(4), epoch=0)
    distil = (PseudoLabelTask if hard else DistillTask)(student, logits, 2.0, view_seed=0)
    task = AnchoredFinetuneTask(SupervisedTask(student, augment="none"), distil, weight=0.5)
    with torch.no_grad():
        got = task(task.prepare(batch))
        ce = F.cross_entropy(student(model_input(batch["images"], student.preprocess, None)), batch["labels"])
        kd = distil(transfer_part(batch))["loss"]
    assert got["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert got["loss"].item() == pytest.approx(ce.item() + 0.5 * kd.item(), rel=1e-5)
    assert got["distill"].item() == pytest.approx(kd.item(), rel=1e-5)


def test_a_zero_weight_gives_the_plain_finetune_gradient():
    torch.manual_seed(0)
    labeled, transfer = _sets()
    student = create_model("resnet10t", 4, input_size=16).eval()
    batch = AnchoredBatches(ImageBatches(labeled), ViewBatches(transfer, 1, seed=0), 6, seed=0).batch(
        torch.arange(4), epoch=0)
    plain = SupervisedTask(student, augment="none")
    anchored = AnchoredFinetuneTask(plain, DistillTask(student, torch.randn(len(transfer), 1, 4), 2.0, 0), 0.0)
    grads = []
    for task in (plain, anchored):
        student.zero_grad()
        task(batch)["loss"].backward()
        grads.append([p.grad.clone() for p in student.parameters() if p.grad is not None])
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(*grads, strict=True))


def test_a_run_with_an_anchored_stage_3_counts_transfer_rows_and_records_the_weight(shapes_dataset, tmp_path: Path):
    from taskdistill.config import RunConfig, load_config
    from taskdistill.pipelines.run import run
    from taskdistill.pipelines.run_folder import read_run_state
    from tests.conftest import tiny_overrides

    train, test = shapes_dataset
    sets = [*tiny_overrides(train, test, tmp_path / "runs"), "distill.finetune_anchor=1.0",
            "distill.finetune_transfer_batch=10", "student.finetune.min_steps=3", "student.finetune.lr=1e-4",
            "num_threads=1"]
    cfg = load_config(RunConfig, None, sets)
    run(cfg, methods=["task-oriented", "pseudo-label"])
    stages = read_run_state(tmp_path / "runs" / "tiny")["stages"]
    # its own rate (distill.finetune_anchor_lr; pseudo-label's hard-label anchor: distill.pseudo_label_anchor_lr),
    # not student.finetune.lr (a plain stage 3's)
    for name, lr in (("student", 1e-3), ("pseudo-label", 1e-4)):
        cost = stages[name]["cost"]
        steps = cost["fit"]["steps"]
        assert cost["details"] == {"finetune_anchor": 1.0, "lr": lr, "transfer_images_per_step": 10}
        assert cost["student_images"] == steps * (8 + 10)  # finetune batch of 8 labels + 10 transfer rows
    assert dataclasses.asdict(cfg.distill)["finetune_anchor"] == 1.0
