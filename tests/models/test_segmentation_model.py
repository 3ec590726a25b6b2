"""Segmentation models: timm features_only backbone + FPN head, one interface for convnets and ViTs."""

import pytest
import torch

from taskdistill.engine.checkpoint import load_checkpoint, save_checkpoint
from taskdistill.errors import ConfigError
from taskdistill.models.packaged import packaged_state_dict
from taskdistill.models.registry import create_model
from taskdistill.models.segmentation import resize_logits


def test_packaged_lite0_backbone_carries_the_imagenet_weights():
    model = create_model("seg:tf_efficientnet_lite0", 5, pretrained=True, input_size=32)
    reference = packaged_state_dict("tf_efficientnet_lite0")
    backbone = model.backbone.state_dict()
    assert torch.equal(backbone["conv_stem.weight"], reference["conv_stem.weight"])
    assert torch.equal(backbone["blocks.6.0.conv_pwl.weight"], reference["blocks.6.0.conv_pwl.weight"])
    assert model.preprocess.mean == (0.5, 0.5, 0.5) and model.output_stride == 4
    model.eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5, 32, 32)
    feats = model.forward_features(torch.randn(1, 3, 32, 32))
    assert model.forward_head(feats).shape == (1, 5, 8, 8)
    assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features, 8, 8)


def test_a_tiny_vit_works_through_the_same_interface():
    model = create_model("seg:vit_tiny_patch16_224", 3, input_size=32, patch_size=8, depth=2).eval()
    assert model.output_stride == 8 and model.channels == [192]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    assert model.dense_features(torch.randn(1, 3, 32, 32), -1).shape == (1, 192, 4, 4)


def test_checkpoint_round_trip_rebuilds_the_same_segmentation_model(tmp_path):
    torch.manual_seed(0)
    model = create_model("seg:resnet10t", 4, input_size=16, head_width=8).eval()
    save_checkpoint(tmp_path / "m", model, ["a", "b", "c", "d"], stage="test", extra={"task": "segmentation"})
    back, meta = load_checkpoint(tmp_path / "m")
    x = torch.randn(2, 3, 16, 16)
    assert meta["task"] == "segmentation" and back.spec.kwargs["head_width"] == 8
    assert torch.allclose(back(x), model(x))


def test_resize_logits_is_bilinear_and_identity_at_the_same_size():
    x = torch.randn(1, 2, 4, 4)
    assert resize_logits(x, (4, 4)) is x
    up = resize_logits(x, (8, 8))
    assert torch.allclose(up, torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False))


def test_unknown_backbone_suggests_a_name():
    with pytest.raises(ConfigError, match="resnet10t"):
        create_model("seg:resnet10", 3)
