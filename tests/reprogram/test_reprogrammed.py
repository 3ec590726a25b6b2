import copy

import pytest
import torch
from torch import nn

from taskdistill.engine.batches import Batch
from taskdistill.engine.loop import Schedule, fit
from taskdistill.models.registry import create_model
from taskdistill.reprogram import (
    FullImagePrompt,
    LinearLabelMap,
    MappedHead,
    PaddingPrompt,
    ReprogrammedTeacher,
    ReprogramTask,
    frequency_label_mapping,
    source_probabilities,
)

NUM_SOURCE, NUM_TARGET = 20, 4


class FixedBatches:
    """A tiny labeled set as a `BatchSource`."""

    def __init__(self, n: int = 16, size: int = 20, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
        self.labels = torch.arange(n) % NUM_TARGET

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: torch.Tensor, epoch: int) -> Batch:
        return {"images": self.images[indices], "labels": self.labels[indices], "indices": indices}


def cnn_teacher() -> nn.Module:
    """Random resnet10t; zero_init_last=False so its output depends on the input more than timm's default."""
    torch.manual_seed(0)
    return create_model("resnet10t", NUM_SOURCE, input_size=16, zero_init_last=False)


def vit_teacher() -> nn.Module:
    torch.manual_seed(0)
    return create_model("vit_tiny_patch16_224", NUM_SOURCE, input_size=32, img_size=32, patch_size=8, depth=2)


def reprogrammed(teacher: nn.Module, pad: int = 2, head: nn.Module | None = None) -> ReprogrammedTeacher:
    size = teacher.preprocess.input_size
    prompt = PaddingPrompt(size, teacher.preprocess, pad=pad)
    return ReprogrammedTeacher(teacher, prompt, head or MappedHead(torch.arange(NUM_TARGET), NUM_SOURCE))


def test_forward_shapes_and_trainable_parameters():
    model = reprogrammed(cnn_teacher())
    out = model(FixedBatches(4).images)
    assert out["target_logits"].shape == (4, NUM_TARGET)
    assert out["source_logits"].shape == (4, NUM_SOURCE)
    assert out["features"].shape == (4, model.teacher.num_features)
    assert torch.equal(out["target_logits"], out["source_logits"][:, :NUM_TARGET])
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in model.prompt.parameters()}
    assert not any(p.requires_grad for p in model.teacher.parameters())
    model.train(True)
    assert model.prompt.training and not any(m.training for m in model.teacher.modules())
    with pytest.raises(TypeError):
        model(FixedBatches(2).images.float())


def test_teacher_is_bit_identical_after_training_while_the_prompt_moved():
    model = reprogrammed(cnn_teacher())
    before = copy.deepcopy(model.teacher.state_dict())
    prompt_before = copy.deepcopy(model.prompt.state_dict())
    assert any(k.endswith("running_mean") for k in before) and any(k.endswith("num_batches_tracked") for k in before)
    result = fit(ReprogramTask(model), FixedBatches(), Schedule(epochs=2, batch_size=8, lr=0.1), progress=False)
    assert result.steps == 4
    after = model.teacher.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(prompt_before[k], v) for k, v in model.prompt.state_dict().items())
    assert all(p.grad is None for p in model.teacher.parameters())


def _loss_on(task: ReprogramTask, data: FixedBatches) -> float:
    task.train(False)
    with torch.no_grad():
        return float(task(data.batch(torch.arange(len(data)), 0))["loss"])


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(kind: str):
    teacher = cnn_teacher() if kind == "cnn" else vit_teacher()
    size = teacher.preprocess.input_size
    prompt = PaddingPrompt(size, teacher.preprocess, pad=4) if kind == "cnn" else FullImagePrompt(
        size, teacher.preprocess)
    model = ReprogrammedTeacher(teacher, prompt, MappedHead(torch.arange(NUM_TARGET), NUM_SOURCE))
    data = FixedBatches(8)
    task = ReprogramTask(model, augment="none")
    before = copy.deepcopy(teacher.state_dict())
    start = _loss_on(task, data)
    fit(task, data, Schedule(epochs=8, batch_size=8, lr=0.05), progress=False)
    assert _loss_on(task, data) < start
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_linear_map_on_features_and_flm_from_the_prompted_teacher():
    teacher = cnn_teacher()
    data = FixedBatches(12)
    flm_model = reprogrammed(teacher)
    probs = source_probabilities(flm_model, data.images, batch_size=5)
    assert probs.shape == (12, NUM_SOURCE) and torch.allclose(probs.sum(1), torch.ones(12))
    mapping = frequency_label_mapping(probs, data.labels, NUM_TARGET)
    assert len(set(mapping.tolist())) == NUM_TARGET
    head = LinearLabelMap(teacher.num_features, NUM_TARGET)
    model = ReprogrammedTeacher(teacher, PaddingPrompt(16, teacher.preprocess, pad=2), head, head_input="features")
    task = ReprogramTask(model, augment="none")
    start = _loss_on(task, data)
    fit(task, data, Schedule(epochs=4, batch_size=6, lr=0.01), progress=False)
    assert _loss_on(task, data) < start
    assert model.num_trainable == model.prompt.num_parameters + sum(p.numel() for p in head.parameters())


def test_trainable_fraction_is_tiny_for_the_packaged_efficientnet_lite0():
    teacher = create_model("tf_efficientnet_lite0", 1000, pretrained=True, input_size=32)
    model = ReprogrammedTeacher(teacher, PaddingPrompt(32, teacher.preprocess, pad=4), MappedHead(torch.arange(10), 1000))
    assert model.num_trainable == 3 * (32 * 32 - 24 * 24)
    assert model.trainable_fraction() < 0.01
    out = model(FixedBatches(2, size=28).images)
    assert out["target_logits"].shape == (2, 10) and out["source_logits"].shape == (2, 1000)
