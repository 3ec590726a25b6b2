import pytest
import torch
import torch.nn.functional as F

from taskdistill.errors import CheckpointError, ConfigError
from taskdistill.models import TaskModel, create_model, create_student, create_teacher


@pytest.mark.parametrize("name", ["mobilevitv2_050", "fastvit_t8", "resnet10t", "tf_efficientnet_lite0"])
def test_paper_students_build_follow_the_interface_and_train(name):
    torch.manual_seed(0)
    model = create_student(name, num_classes=4, input_size=32)
    assert isinstance(model, TaskModel)
    assert model.preprocess.input_size == 32 and model.spec.name == name and model.spec.num_classes == 4
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    assert feats.shape == (8, model.num_features)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_packaged_teacher_gets_a_fresh_task_head():
    t = create_teacher("tf_efficientnet_lite0", num_classes=7, input_size=32)
    assert t.get_classifier().out_features == 7
    assert t.preprocess.mean == (0.5, 0.5, 0.5)  # the packaged weights' own normalisation


def test_unknown_name_suggests_close_names():
    with pytest.raises(ConfigError, match="unknown model 'resnet10q'.*resnet10t"):
        create_model("resnet10q", 3)


def test_hub_weights_offline_become_a_checkpoint_error(monkeypatch):
    import timm

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(timm, "create_model", no_network)
    with pytest.raises(CheckpointError, match="needs a network.*model.checkpoint"):
        create_model("vit_small_patch14_dinov2", 3, pretrained=True)


def test_unset_kwargs_are_dropped_and_set_ones_recorded():
    m = create_model("resnet10t", 3, drop_rate=None, drop_path_rate=0.1)
    assert m.spec.kwargs == {"drop_path_rate": 0.1}


def test_packaged_teacher_keeps_its_imagenet_head_when_asked_for_1000_classes():
    from taskdistill.models.packaged import packaged_state_dict

    t = create_teacher("tf_efficientnet_lite0", num_classes=1000, input_size=32)
    assert torch.equal(t.get_classifier().weight, packaged_state_dict("tf_efficientnet_lite0")["classifier.weight"])
