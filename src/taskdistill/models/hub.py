"""Teachers from open_clip and Hugging Face transformers, wrapped in the `TaskModel` interface.

Both wrappers keep only the image tower and put a fresh linear head on its pooled output:
`forward_features` returns the pooled image embedding `[B, D]` (not tokens), and `forward_head`
is dropout + linear, so `forward_head(feats, pre_logits=True)` gives the same `[B, D]` back.

timm models, DINOv2 included (e.g. `vit_small_patch14_dinov2.lvd142m`), need no wrapper: they
already follow timm's classifier interface, so they are built with `timm.create_model` and their
preprocessing comes from timm's pretrained config. Only models timm lacks come through here.

open_clip and transformers are optional (`pip install taskdistill[hub]`) and imported lazily.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from taskdistill.errors import CheckpointError, ConfigError
from taskdistill.models.base import IMAGENET_MEAN, IMAGENET_STD, Preprocess

if TYPE_CHECKING:
    from transformers import PretrainedConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_LOAD_ERRORS = (OSError, ValueError, RuntimeError)  # how offline / missing-file / bad-id failures surface


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"this model needs the optional package '{module}'; install it with `pip install taskdistill[hub]`"
        ) from e


def _load_error(what: str, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f"could not load {what}: {str(err).strip().rstrip('.')}. If it is not on disk, the hub needs a network connection "
        "to download it; offline, pass a local file or folder instead"
    )


def _triple(v: Any, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if v is None:
        return default
    vals = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
    return (vals[0],) * 3 if len(vals) == 1 else (vals[0], vals[1], vals[2])


def _side(size: Any) -> int | None:
    """One int from an image size: an int, `(H, W)` -> H, or an HF dict (height / shortest_edge)."""
    if isinstance(size, dict):
        size = size.get("height", size.get("shortest_edge"))
    if isinstance(size, (list, tuple)):
        size = size[0]
    return None if size is None else int(size)


class _LinearHeadModel(nn.Module):
    """timm-style head on pooled features `[B, D]`: dropout, then `Linear(D, K)` (identity when K=0)."""

    num_features: int
    num_classes: int

    def _init_head(self, num_features: int, num_classes: int, drop_rate: float) -> None:
        self.num_features = num_features
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh `Linear(num_features, num_classes)`; 0 gives `nn.Identity`."""
        self.num_classes = int(num_classes)
        head: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        ref = next(self.parameters(), None)
        self.head = head if ref is None else head.to(device=ref.device, dtype=ref.dtype)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """`[B, D]` -> logits `[B, K]`, or the features `[B, D]` when `pre_logits=True`."""
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, 3, H, W]` -> `[B, K]`."""
        return self.forward_head(self.forward_features(x))


class OpenClipImageClassifier(_LinearHeadModel):
    """An open_clip image tower (`model.visual`) plus a linear head: `[B, 3, H, W]` -> `[B, K]`.

    Features are the projected CLIP image embedding `[B, embed_dim]` (the space text embeddings
    live in), optionally L2-normalised. Preprocessing is the tower's own `preprocess_cfg`.
    """

    def __init__(
        self, visual: nn.Module, num_classes: int, normalize: bool = False, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.visual = visual
        self.normalize = normalize
        self.preprocess = _open_clip_preprocess(visual)
        self._init_head(_open_clip_width(visual, self.preprocess.input_size), num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, 3, H, W]` -> image embedding `[B, embed_dim]`."""
        out = self.visual(x)
        if isinstance(out, (tuple, list)):  # towers built with output_tokens=True
            out = out[0]
        return nn.functional.normalize(out, dim=-1) if self.normalize else out


def _open_clip_preprocess(visual: nn.Module) -> Preprocess:
    cfg: dict[str, Any] = dict(getattr(visual, "preprocess_cfg", None) or {})
    mean = cfg.get("mean", getattr(visual, "image_mean", None))
    std = cfg.get("std", getattr(visual, "image_std", None))
    size = _side(cfg.get("size", getattr(visual, "image_size", None))) or 224
    return Preprocess(mean=_triple(mean, CLIP_MEAN), std=_triple(std, CLIP_STD), input_size=size)


def _open_clip_width(visual: nn.Module, size: int) -> int:
    width = getattr(visual, "output_dim", None)
    if isinstance(width, int) and width > 0:
        return width
    # timm-based towers do not record their output width: measure it once.
    ref = next(visual.parameters())
    with torch.no_grad():
        out = visual(torch.zeros(1, 3, size, size, device=ref.device, dtype=ref.dtype))
    return int((out[0] if isinstance(out, (tuple, list)) else out).shape[-1])


def create_open_clip_classifier(spec: str, num_classes: int, pretrained: bool) -> OpenClipImageClassifier:
    """Build an open_clip image classifier from `spec`.

    `spec` is `MODEL` or `MODEL/PRETRAINED` where PRETRAINED is an open_clip tag
    (`ViT-B-32/laion2b_s34b_b79k`) or a local checkpoint file (`ViT-B-32//abs/path.pt`);
    `hf-hub:org/repo` and `local-dir:/path` are passed to open_clip as they are.
    `pretrained=False` gives random weights and never downloads (except the config of hf-hub: models).
    """
    open_clip = _require("open_clip")
    kwargs: dict[str, Any]
    if spec.startswith(("hf-hub:", "local-dir:")):
        name, kwargs = spec, {"load_weights": pretrained}
    else:
        name, _, tag = spec.partition("/")
        if open_clip.get_model_config(name) is None:
            raise ConfigError(f"unknown open_clip model '{name}' in '{spec}'; see open_clip.list_models()")
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained and not tag:
            raise CheckpointError(
                f"'{spec}' names no pretrained weights; use '{name}/TAG' with TAG one of {tags} "
                "or a local checkpoint file"
            )
        if pretrained and not os.path.isfile(tag) and not open_clip.is_pretrained_cfg(name, tag):
            raise CheckpointError(
                f"'{tag}' is neither a pretrained tag of open_clip model '{name}' ({tags}) nor an existing file"
            )
        # Tags trained with QuickGELU (e.g. openai) silently lose accuracy with plain GELU.
        quick = bool(pretrained and open_clip.get_pretrained_cfg(name, tag).get("quick_gelu", False))
        kwargs = {"pretrained": tag if pretrained else None, "force_quick_gelu": quick}
    try:
        model = open_clip.create_model(name, pretrained_text=False, **kwargs)
    except _LOAD_ERRORS as e:
        if not (pretrained or "load_weights" in kwargs):
            raise
        raise _load_error(f"open_clip model {spec!r}", e) from e
    return OpenClipImageClassifier(model.visual, num_classes)


class HFImageClassifier(_LinearHeadModel):
    """A transformers vision model (ViT, DINOv2, CLIP/SigLIP vision) plus a linear head.

    `[B, 3, H, W]` -> `[B, K]`. Pooling: `"auto"` takes `pooler_output` when the model gives one
    (DINOv2, CLIP: normed CLS; SigLIP: attention-pool head; ViT: its dense+tanh pooler), else the
    CLS token, or the token mean for models without CLS (SigLIP without head). `"cls"`/`"mean"`
    force one; use `"cls"` for ViT checkpoints whose pooler was never trained.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        num_classes: int,
        preprocess: Preprocess,
        pooling: str = "auto",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if pooling not in ("auto", "cls", "mean"):
            raise ConfigError(f"pooling must be 'auto', 'cls' or 'mean', got '{pooling}'")
        self.backbone = backbone
        self.pooling = pooling
        self.preprocess = preprocess
        model_type = str(getattr(getattr(backbone, "config", None), "model_type", ""))
        self._has_cls = not model_type.startswith("siglip")
        self._init_head(num_features, num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, 3, H, W]` -> pooled features `[B, num_features]`."""
        out = self.backbone(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if self.pooling == "auto" and pooled is not None:
            return pooled.flatten(1)
        tokens = out.last_hidden_state
        if tokens.ndim == 4:  # convolutional models: [B, C, h, w]
            return tokens.mean(dim=(2, 3))
        if self.pooling == "mean" or (self.pooling == "auto" and not self._has_cls):
            return tokens.mean(dim=1)
        return tokens[:, 0]


def _hf_preprocess(cfg: Any, model_type: str, proc: dict[str, Any] | None) -> Preprocess:
    """Mean/std/size from a local `preprocessor_config.json` when there is one, else by model type:
    CLIP family -> OpenAI CLIP stats, SigLIP and google ViT -> 0.5/0.5, others (DINOv2) -> ImageNet;
    size -> `config.image_size`, capped at 224 for DINOv2 (its processor's crop; position
    embeddings are interpolated)."""
    if "clip" in model_type:
        mean, std = CLIP_MEAN, CLIP_STD
    elif model_type.startswith("siglip") or model_type == "vit":
        mean = std = (0.5, 0.5, 0.5)
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    size = _side(getattr(cfg, "image_size", None)) or 224
    if model_type.startswith("dinov2"):
        size = min(size, 224)
    if proc:
        mean, std = _triple(proc.get("image_mean"), mean), _triple(proc.get("image_std"), std)
        crop = _side(proc.get("crop_size")) if proc.get("do_center_crop", True) else None
        size = crop or _side(proc.get("size")) or size
    return Preprocess(mean=mean, std=std, input_size=size)


def _local_processor_config(repo_or_path: str) -> dict[str, Any] | None:
    """The image processor config if it is on disk (a local folder or the hub cache); never downloads."""
    path: Any = Path(repo_or_path) / "preprocessor_config.json"
    if not Path(repo_or_path).is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(repo_or_path, "preprocessor_config.json")
        except (ImportError, ValueError):
            return None
    if not isinstance(path, (str, Path)) or not Path(path).is_file():
        return None
    try:
        return dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return None


def create_hf_classifier(
    repo_or_path: str,
    num_classes: int,
    pretrained: bool,
    config: PretrainedConfig | None = None,
    pooling: str = "auto",
) -> HFImageClassifier:
    """Build a transformers image classifier from a hub id or a local folder.

    `pretrained=True`: `AutoModel.from_pretrained(repo_or_path)` in float32 (a local folder works
    offline). `pretrained=False`: random weights from `config`, or from the repo's config when
    `config` is None. Composite image-text models (CLIP, SigLIP) keep only `vision_model`.
    """
    transformers = _require("transformers")
    try:
        if pretrained:
            model = transformers.AutoModel.from_pretrained(repo_or_path, dtype=torch.float32)
        else:
            if config is None:
                config = transformers.AutoConfig.from_pretrained(repo_or_path)
            model = transformers.AutoModel.from_config(config).float()
    except _LOAD_ERRORS as e:
        raise _load_error(f"Hugging Face model {repo_or_path!r}", e) from e
    top_cfg = model.config
    model_type = str(top_cfg.model_type)
    vis_cfg = getattr(top_cfg, "vision_config", None)
    if vis_cfg is not None and hasattr(model, "vision_model"):
        model = model.vision_model
    else:
        vis_cfg = top_cfg
    width = getattr(vis_cfg, "hidden_size", None) or list(getattr(vis_cfg, "hidden_sizes", None) or [0])[-1]
    if not width:
        raise ConfigError(f"cannot tell the feature width of Hugging Face model {repo_or_path!r}")
    preprocess = _hf_preprocess(vis_cfg, model_type, _local_processor_config(repo_or_path))
    return HFImageClassifier(model, int(width), num_classes, preprocess, pooling=pooling)
