import pytest
import torch
from torch import nn

from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import model_input, replay_views
from taskdistill.engine.batches import ViewBatches
from taskdistill.engine.loop import Schedule, build_optimizer, fit
from taskdistill.losses.feature import cosine_feature_loss
from taskdistill.models.registry import create_model
from taskdistill.tasks.feature_distill import FeatureDistillTask, FeatureProjector, make_projector

N, V, DT = 12, 2, 8


def transfer_set() -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 3, 16, 16), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.full((N,), -1), [f"img/{i}" for i in range(N)], ["a", "b", "c"])


def make_task(loss: str = "cosine", hidden: int | None = None) -> tuple[FeatureDistillTask, ViewBatches]:
    torch.manual_seed(0)
    student = create_model("resnet10t", 3, input_size=16)
    feats = torch.randn(N, V, DT, generator=torch.Generator().manual_seed(1))
    task = FeatureDistillTask(student, make_projector(student, DT, hidden), feats, loss=loss, view_seed=3)
    return task, ViewBatches(transfer_set(), num_views=V, seed=0)


def test_projector_shapes():
    mlp = FeatureProjector(5, 8)
    assert mlp.hidden == 8 and mlp(torch.randn(4, 5)).shape == (4, 8)
    assert FeatureProjector(5, 8, hidden=16)(torch.randn(4, 5)).shape == (4, 8)
    linear = FeatureProjector(5, 8, hidden=0)
    assert isinstance(linear.net, nn.Linear) and linear(torch.randn(1, 5)).shape == (1, 8)
    with pytest.raises(ValueError):
        FeatureProjector(5, 8, hidden=-1)


def test_target_is_the_cached_feature_of_the_replayed_view():
    task, source = make_task()
    batch = source.batch(torch.tensor([0, 5, 7, 11]), epoch=0)
    task.train(False)
    with torch.no_grad():
        out = task(batch)
        views = replay_views(batch["indices"], batch["views"], 3)
        x = model_input(batch["images"], task.student.preprocess, views)
        pred = task.projector(task.student.forward_head(task.student.forward_features(x), pre_logits=True))
        expected = cosine_feature_loss(pred, task.teacher_features.gather(batch["indices"], batch["views"]))
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["cosine"].item() == pytest.approx(out["loss"].item())


def test_trainable_parameters_include_projector_and_skip_the_head():
    task, _ = make_task()
    ids = {id(p) for p in task.trainable_parameters()}
    assert all(id(p) in ids for p in task.projector.parameters())
    assert not any(id(p) in ids for p in task.student.get_classifier().parameters())
    assert all(p.requires_grad for p in task.student.get_classifier().parameters())  # finetuning still trains it
    backbone = [p for p in task.student.parameters() if id(p) not in {id(q) for q in task.student.get_classifier().parameters()}]
    assert all(id(p) in ids for p in backbone)
    build_optimizer(task.trainable_parameters(), Schedule(epochs=1, batch_size=4, lr=1e-3))  # no empty groups


@pytest.mark.parametrize("loss", ["contrastive", "cosine+contrastive"])
def test_other_losses_run_and_backpropagate(loss):
    task, source = make_task(loss, hidden=0)
    task.train(True)
    out = task(source.batch(torch.arange(4), epoch=0))
    assert set(out) >= {"loss", "similarity", "contrastive"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert task.projector.net.weight.grad is not None
    assert task.student.get_classifier().weight.grad is None  # the head is never used


def test_rejects_bad_arguments():
    student = create_model("resnet10t", 3, input_size=16)
    proj = make_projector(student, DT)
    with pytest.raises(ValueError):
        FeatureDistillTask(student, proj, torch.randn(N, V, DT), loss="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FeatureDistillTask(student, proj, torch.randn(N, DT))


def test_fit_lowers_the_cosine_loss():
    task, source = make_task()
    batch = source.batch(torch.arange(N), epoch=0)
    head_before = task.student.get_classifier().weight.detach().clone()

    def loss_on_fixed_batch() -> float:
        task.train(False)
        with torch.no_grad():
            return task(batch)["loss"].item()

    before = loss_on_fixed_batch()
    result = fit(task, source, Schedule(epochs=4, batch_size=4, lr=3e-3), progress=False)
    after = loss_on_fixed_batch()
    assert result.steps == 4 * (N // 4)
    assert after < 0.6 * before, (before, after)  # about 1.00 -> 0.41
    assert torch.equal(task.student.get_classifier().weight, head_before)
