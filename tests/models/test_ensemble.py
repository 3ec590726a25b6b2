"""The ensemble teacher: its output formula, each member at its own input, features, checkpoints, cache keys."""

import math

import pytest
import torch
import torch.nn.functional as F

from taskdistill.cache.teacher_outputs import cache_key, cached_teacher_outputs, teacher_forward
from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import Views, model_input, replay_views
from taskdistill.engine.checkpoint import load_checkpoint, save_checkpoint
from taskdistill.engine.evaluate import predict_logits
from taskdistill.errors import ConfigError
from taskdistill.models import TaskModel, create_model
from taskdistill.models.ensemble import EnsembleTeacher, average_softened

T = 2.0


def members(sizes=(16, 24), classes=3):
    torch.manual_seed(0)
    return [create_model("resnet10t", classes, input_size=s).eval() for s in sizes]


def ensemble(sizes=(16, 24), temperature=T):
    return EnsembleTeacher(members(sizes), temperature).eval()


def images(n=6, side=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 255, (n, 3, side, side), dtype=torch.uint8, generator=g)


def tiny_set(n=10, side=24) -> ImageSet:
    return ImageSet(images=images(n, side), labels=torch.full((n,), -1), ids=[f"x/{i}" for i in range(n)],
                    class_names=["a", "b", "c"])


@torch.no_grad()
def test_output_is_T_log_of_the_mean_softened_member_outputs():
    ens = ensemble()
    x = images()
    z = [m(model_input(x, m.preprocess)) for m in ens.members]  # each member alone, from the stored pixels
    out = ens(model_input(x, ens.preprocess))
    expected = T * torch.log(torch.stack([F.softmax(zi / T, dim=-1) for zi in z]).mean(0))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    # what a student distilled at T sees: exactly the average of the members' softened outputs
    torch.testing.assert_close(F.softmax(out / T, dim=-1),
                               torch.stack([F.softmax(zi / T, dim=-1) for zi in z]).mean(0), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(F.softmax(out / T, -1), F.softmax(z[0] / T, -1), atol=1e-3)  # both members count


def test_the_average_stays_finite_for_confident_members():
    z = [torch.tensor([[3000.0, -3000.0, 0.0]]), torch.tensor([[-3000.0, 3000.0, 0.0]])]
    out = average_softened(z, T)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(F.softmax(out / T, -1), torch.tensor([[0.5, 0.5, 0.0]]))
    one = average_softened([torch.tensor([[1.0, 2.0, 3.0]])], 1.0)  # one member at T = 1: its log-probabilities
    torch.testing.assert_close(one, F.log_softmax(torch.tensor([[1.0, 2.0, 3.0]]), -1))
    assert math.isclose(float(average_softened([torch.zeros(1, 4)] * 3, T)[0, 0]), T * math.log(0.25), rel_tol=1e-6)


@torch.no_grad()
def test_each_member_sees_its_own_input_size_and_statistics():
    ens = ensemble(sizes=(16, 24))
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone())) for m in ens.members]
    x = images(side=24)  # stored at the largest member side, as data.load_size is by default
    ens(model_input(x, ens.preprocess))
    for h in hooks:
        h.remove()
    assert [tuple(s.shape[-2:]) for s in seen] == [(16, 16), (24, 24)]
    assert ens.preprocess.input_size == 24 and ens.preprocess.mean == (0.0, 0.0, 0.0)
    for got, m in zip(seen, ens.members, strict=True):  # the very pixels each member sees as a single teacher
        torch.testing.assert_close(got, model_input(x, m.preprocess), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_views_reach_every_member_and_the_interface_holds():
    ens = ensemble()
    assert isinstance(ens, TaskModel)
    x = images()
    views = replay_views(torch.arange(len(x)), torch.full((len(x),), 1), seed=0)  # mirrored
    flipped = teacher_forward(ens, x.flip(-1), Views.plain(len(x)), "logits")
    torch.testing.assert_close(teacher_forward(ens, x, views, "logits"), flipped, rtol=1e-4, atol=1e-4)
    feats = teacher_forward(ens, x, Views.plain(len(x)), "features")
    widths = [m.num_features for m in ens.members]
    assert feats.shape == (len(x), sum(widths)) == (len(x), ens.num_features)
    for block in feats.split(widths, dim=1):  # each member's pooled features at unit norm: equal weight
        torch.testing.assert_close(block.norm(dim=1), torch.ones(len(x)))
    head = ens.forward_head(ens.forward_features(model_input(x, ens.preprocess)))
    torch.testing.assert_close(head, ens(model_input(x, ens.preprocess)), rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in ens.get_classifier().parameters()) == sum(
        sum(p.numel() for p in m.get_classifier().parameters()) for m in ens.members)


def test_checkpoint_round_trip_rebuilds_the_ensemble_with_identical_outputs(tmp_path):
    ens = ensemble()
    save_checkpoint(tmp_path / "teacher", ens, ["a", "b", "c"], stage="teacher")
    loaded, meta = load_checkpoint(tmp_path / "teacher", expect_classes=["a", "b", "c"])
    assert isinstance(loaded, EnsembleTeacher)
    assert meta["model"]["name"] == ens.spec.name == "ensemble:resnet10t+resnet10t"
    assert loaded.spec == ens.spec and loaded.temperature == T
    assert [m.preprocess for m in loaded.members] == [m.preprocess for m in ens.members]
    x = images()
    torch.testing.assert_close(predict_logits(loaded, x, 4), predict_logits(ens, x, 4), rtol=0, atol=0)


def test_an_ensemble_model_name_without_members_is_a_config_error():
    with pytest.raises(ConfigError, match="teacher.ensemble"):
        create_model("ensemble:resnet10t+resnet10t", 3)


def test_cache_key_differs_from_a_single_teachers_and_by_temperature():
    transfer = tiny_set()
    ens = ensemble()
    single = ens.members[0]
    key = cache_key(ens, transfer, 1, 0)
    assert key != cache_key(single, transfer, 1, 0)
    assert key != cache_key(EnsembleTeacher(members(), 4.0), transfer, 1, 0)  # same weights, another T
    assert key == cache_key(EnsembleTeacher(members(), T), transfer, 1, 0)  # same members, same T
    assert key != cache_key(EnsembleTeacher(members()[::-1], T), transfer, 1, 0)  # the member order is in it
    one = EnsembleTeacher(members(sizes=(16,)), T)  # even an ensemble of one stores other numbers than its member
    assert cache_key(one, transfer, 1, 0) != cache_key(one.members[0], transfer, 1, 0)


def test_cached_outputs_are_the_ensembles(tmp_path):
    ens, transfer = ensemble(), tiny_set()
    outputs, info = cached_teacher_outputs(ens, transfer, 2, 0, tmp_path, batch_size=4)
    assert not info["hit"] and info["teacher_images"] == 2 * len(transfer)
    direct = teacher_forward(ens, transfer.images[torch.arange(len(transfer))], Views.plain(len(transfer)), "logits")
    torch.testing.assert_close(outputs.dense()[:, 0], direct, rtol=2e-3, atol=2e-2)  # float16 storage
    _, again = cached_teacher_outputs(ensemble(), transfer, 2, 0, tmp_path, batch_size=4)
    assert again["hit"] and again["key"] == info["key"]


def test_members_must_predict_the_same_classes():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="same classes"):
        EnsembleTeacher([create_model("resnet10t", 3, input_size=16), create_model("resnet10t", 4, input_size=16)], T)
