"""The per-pixel distillation and dense feature-matching tasks."""

import torch

from taskdistill.data.views import model_input, replay_views
from taskdistill.losses.dense_kd import dense_kd_loss
from taskdistill.models.registry import create_model
from taskdistill.models.segmentation import resize_logits
from taskdistill.tasks.dense_distill import DenseDistillTask
from taskdistill.tasks.dense_feature_distill import DenseFeatureDistillTask, DenseProjector
from taskdistill.tasks.supervised import SupervisedTask


def student(classes=3):
    torch.manual_seed(0)
    return create_model("seg:resnet10t", classes, input_size=16, head_width=8)


def batch(n=4):
    g = torch.Generator().manual_seed(1)
    return {"images": torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
            "indices": torch.arange(n), "views": torch.tensor([0, 1, 2, 3])[:n]}


def test_loss_is_the_kl_to_the_upsampled_stored_logits():
    s, teacher = student(), torch.randn(4, 4, 3, 4, 4)
    task = DenseDistillTask(s, teacher, temperature=2.0, view_seed=5)
    s.eval()
    b = batch()
    out = task(b)
    x = model_input(b["images"], s.preprocess, replay_views(b["indices"], b["views"], 5))
    logits = s(x)
    target = resize_logits(teacher[b["indices"], b["views"]], (16, 16))
    assert torch.allclose(out["loss"], dense_kd_loss(logits, target, 2.0), atol=1e-5)
    assert 0.0 <= out["pixel_agree"].item() <= 1.0


def test_ignore_pixels_of_a_batch_with_masks_are_left_out():
    s, teacher = student(), torch.randn(4, 4, 3, 4, 4)
    task = DenseDistillTask(s, teacher, temperature=1.0, view_seed=0)
    s.eval()
    b = batch(1) | {"views": torch.tensor([0])}
    b["masks"] = torch.full((1, 16, 16), 255, dtype=torch.uint8)
    b["masks"][0, :8] = 1  # only the top half is labeled
    x = model_input(b["images"], s.preprocess)
    logits, target = s(x), resize_logits(teacher[[0], [0]], (16, 16))
    top = dense_kd_loss(logits[..., :8, :], target[..., :8, :], 1.0)
    assert torch.allclose(task(b)["loss"], top, atol=1e-5)


def test_feature_matching_trains_backbone_fpn_and_projector_not_the_classifier():
    s = student()
    projector = DenseProjector(s.num_features, 32)
    task = DenseFeatureDistillTask(s, projector, torch.randn(4, 4, 32, 2, 2), view_seed=0)
    params = {id(p) for p in task.trainable_parameters()}
    assert not params & {id(p) for p in s.get_classifier().parameters()}
    assert {id(p) for p in projector.parameters()} <= params
    out = task(batch())
    out["loss"].backward()
    assert s.backbone.conv1[0].weight.grad is not None and 0.0 <= out["cosine"].item() <= 2.0


def test_head_only_supervised_training_leaves_the_backbone_alone():
    s = student()
    before = {k: v.clone() for k, v in s.backbone.state_dict().items()}
    task = SupervisedTask(s, head_only=True, augment="crop-flip", per_pixel=True)
    params = {id(p) for p in task.trainable_parameters()}
    assert params == {id(p) for p in s.head.parameters()}
    task.train(True)
    b = batch() | {"masks": torch.randint(0, 3, (4, 16, 16), dtype=torch.uint8)}
    out = task(b)
    out["loss"].backward()
    assert all(torch.equal(v, s.backbone.state_dict()[k]) for k, v in before.items())  # BN stats did not move
    assert 0.0 <= out["pixel_acc"].item() <= 1.0
