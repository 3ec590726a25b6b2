"""open_clip / transformers wrappers and timm DINOv2, on tiny random models built offline."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from taskdistill.errors import CheckpointError, ConfigError
from taskdistill.models.base import TaskModel

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

from taskdistill.models import hub  # noqa: E402

TINY_CLIP = "taskdistill-tiny-test-vit"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module", autouse=True)
def tiny_open_clip_config(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Register a 2-layer, width-32 open_clip ViT (32px, patch 8) with a 1-layer text tower."""
    folder = tmp_path_factory.mktemp("open_clip_cfg")
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub access and an empty cache, whatever the machine has."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def _tiny_open_clip(k: int) -> hub.OpenClipImageClassifier:
    return hub.create_open_clip_classifier(TINY_CLIP, k, pretrained=False)


def _tiny_hf(kind: str, k: int) -> hub.HFImageClassifier:
    configs: dict[str, Callable[[], transformers.PretrainedConfig]] = {
        "dinov2": lambda: transformers.Dinov2Config(**TINY, image_size=28, patch_size=14),
        "clip_vision": lambda: transformers.CLIPVisionConfig(**TINY, image_size=28, patch_size=14),
        "siglip_vision": lambda: transformers.SiglipVisionConfig(**TINY, image_size=28, patch_size=14),
        "clip": lambda: transformers.CLIPConfig(
            vision_config=dict(**TINY, image_size=28, patch_size=14),
            text_config=dict(**TINY, vocab_size=64, bos_token_id=0, eos_token_id=1, pad_token_id=1),
            projection_dim=16,
        ),
    }
    return hub.create_hf_classifier("local/unused", k, pretrained=False, config=configs[kind]())


BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "open_clip": _tiny_open_clip,
    **{
        f"hf_{kind}": (lambda k, kind=kind: _tiny_hf(kind, k))
        for kind in ("dinov2", "clip_vision", "siglip_vision", "clip")
    },
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_wrapper_follows_task_model_interface(name: str) -> None:
    torch.manual_seed(0)
    model = BUILDERS[name](3)
    size = model.preprocess.input_size
    x = torch.randn(2, 3, size, size)
    assert isinstance(model, TaskModel)

    logits = model(x)
    assert logits.shape == (2, 3)
    feats = model.forward_features(x)
    pooled = model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    assert torch.allclose(model.forward_head(feats), logits, atol=1e-5)
    assert model.get_classifier() is model.head

    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.get_classifier().out_features == 5
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_gradients_reach_head_and_sgd_step_lowers_loss(name: str) -> None:
    torch.manual_seed(0)
    model = BUILDERS[name](3)
    size = model.preprocess.input_size
    x, y = torch.randn(4, 3, size, size), torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    head = model.get_classifier()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "head" not in n
    )
    opt.step()
    with torch.no_grad():
        assert nn.functional.cross_entropy(model(x), y) < loss


def test_preprocess_comes_from_model_configs() -> None:
    oc = _tiny_open_clip(2).preprocess
    assert oc.input_size == 32 and oc.mean == pytest.approx(CLIP_MEAN)
    assert _tiny_hf("clip", 2).preprocess.mean == pytest.approx(CLIP_MEAN)
    assert _tiny_hf("siglip_vision", 2).preprocess.std == (0.5, 0.5, 0.5)
    dino = _tiny_hf("dinov2", 2).preprocess
    assert dino.input_size == 28 and dino.mean == pytest.approx((0.485, 0.456, 0.406))


def test_composite_clip_keeps_only_vision_tower() -> None:
    model = _tiny_hf("clip", 2)
    assert not any("text" in n for n, _ in model.named_parameters())
    assert model.num_features == 32


def test_hf_local_folder_loads_offline_with_processor_config(tmp_path: Path, offline: None) -> None:
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(**TINY, image_size=28, patch_size=14)
    saved = transformers.AutoModel.from_config(cfg)
    saved.save_pretrained(tmp_path)
    proc = {
        "image_mean": [0.1, 0.2, 0.3],
        "image_std": [0.4, 0.5, 0.6],
        "crop_size": {"height": 42, "width": 42},
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(proc))

    model = hub.create_hf_classifier(str(tmp_path), 4, pretrained=True)
    for key, value in saved.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    assert model.preprocess.mean == (0.1, 0.2, 0.3) and model.preprocess.input_size == 42
    assert model(torch.randn(1, 3, 42, 42)).shape == (1, 4)


def test_open_clip_local_checkpoint_file_loads(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = open_clip.create_model(TINY_CLIP, pretrained=None)
    ckpt = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), ckpt)
    model = hub.create_open_clip_classifier(f"{TINY_CLIP}/{ckpt}", 2, pretrained=True)
    for key, value in source.visual.state_dict().items():
        assert torch.equal(model.visual.state_dict()[key], value), key


def test_hf_pretrained_without_network_raises_checkpoint_error(offline: None) -> None:
    name = "taskdistill-tests/not-a-cached-model"
    start = time.monotonic()
    for pretrained in (True, False):
        with pytest.raises(CheckpointError, match=name):
            hub.create_hf_classifier(name, 3, pretrained=pretrained)
    assert time.monotonic() - start < 10


def test_open_clip_pretrained_without_network_raises_checkpoint_error(offline: None) -> None:
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="ViT-B-32") as info:
        hub.create_open_clip_classifier("ViT-B-32/laion2b_s34b_b79k", 3, pretrained=True)
    assert "network" in str(info.value)
    assert time.monotonic() - start < 10


def test_open_clip_spec_errors_are_actionable() -> None:
    with pytest.raises(ConfigError, match="no-such-model"):
        hub.create_open_clip_classifier("no-such-model", 3, pretrained=False)
    with pytest.raises(CheckpointError, match="laion2b_s34b_b79k"):
        hub.create_open_clip_classifier("ViT-B-32", 3, pretrained=True)  # no tag: lists the tags
    with pytest.raises(CheckpointError, match="not-a-tag"):
        hub.create_open_clip_classifier("ViT-B-32/not-a-tag", 3, pretrained=True)


def test_timm_dinov2_needs_no_wrapper() -> None:
    """timm DINOv2 models (e.g. vit_small_patch14_dinov2.lvd142m) go straight through timm."""
    model = timm.create_model(
        "vit_small_patch14_dinov2",
        pretrained=False,
        img_size=28,
        patch_size=14,
        embed_dim=32,
        depth=1,
        num_heads=2,
        num_classes=3,
    )
    x = torch.randn(2, 3, 28, 28)
    feats = model.forward_features(x)
    assert feats.shape == (2, 1 + 4, 32)  # CLS + 2x2 patches
    assert model.forward_head(feats).shape == (2, 3)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)


def test_pooling_falls_back_to_mean_or_cls_tokens() -> None:
    cfg = transformers.SiglipVisionConfig(**TINY, image_size=28, patch_size=14, vision_use_head=False)
    model = hub.create_hf_classifier("local/unused", 2, pretrained=False, config=cfg)
    x = torch.randn(2, 3, 28, 28)
    tokens = model.backbone(pixel_values=x).last_hidden_state
    assert torch.allclose(model.forward_features(x), tokens.mean(dim=1), atol=1e-6)  # SigLIP: no CLS
    vit = transformers.ViTConfig(**TINY, image_size=28, patch_size=14)
    model = hub.create_hf_classifier("local/unused", 2, pretrained=False, config=vit, pooling="cls")
    tokens = model.backbone(pixel_values=x).last_hidden_state
    assert torch.allclose(model.forward_features(x), tokens[:, 0], atol=1e-6)
    with pytest.raises(ConfigError, match="pooling"):
        hub.create_hf_classifier("local/unused", 2, pretrained=False, config=vit, pooling="max")


def test_open_clip_openai_tag_gets_quick_gelu(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_create_model(name: str, **kwargs: object) -> nn.Module:
        seen.update(kwargs, name=name)
        raise RuntimeError("no network in tests")

    monkeypatch.setattr(open_clip, "create_model", fake_create_model)
    with pytest.raises(CheckpointError, match="ViT-B-32/openai"):
        hub.create_open_clip_classifier("ViT-B-32/openai", 3, pretrained=True)
    assert seen == {
        "name": "ViT-B-32",
        "pretrained": "openai",
        "force_quick_gelu": True,
        "pretrained_text": False,
    }
