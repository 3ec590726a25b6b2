"""Build the reprogrammed teacher a `TDMRConfig` describes, and the ILM variant of its training task.

Prompt: "padding" (`PaddingPrompt`), "full" (`FullImagePrompt`) or "none" (`NoPrompt`). Label map:
- "flm": a fixed `MappedHead` from FLM on the labeled set seen through the initial prompt;
- "ilm": the same, recomputed every `ilm_period` reprogramming steps with the current prompt;
- "linear-logits": a learned `LinearLabelMap` on the source logits, started as the FLM map;
- "linear-features": a learned `LinearLabelMap` on the teacher's pooled features (a prompted linear probe).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from taskdistill.config.schema import TDMRConfig
from taskdistill.data.image_rows import Images
from taskdistill.data.image_set import ImageSet
from taskdistill.engine.batches import Batch
from taskdistill.models.base import Preprocess
from taskdistill.reprogram.label_mapping import (
    LinearLabelMap,
    MappedHead,
    frequency_label_mapping,
    iterative_label_mapping,
)
from taskdistill.reprogram.reprogrammed import ReprogrammedTeacher, ReprogramTask, source_probabilities
from taskdistill.reprogram.visual_prompt import FullImagePrompt, NoPrompt, PaddingPrompt, VisualPrompt

PROMPTS: tuple[str, ...] = ("padding", "full", "none")
LABEL_MAPPINGS: tuple[str, ...] = ("flm", "ilm", "linear-logits", "linear-features")


def default_pad(input_size: int) -> int:
    """Frame width when `tdmr.pad` is unset: an eighth of the canvas (8 px at 64, 28 px at 224)."""
    return max(1, input_size // 8)


def make_prompt(kind: str, preprocess: Preprocess, pad: int | None = None) -> VisualPrompt:
    """The visual prompt `kind` for a teacher that takes `preprocess` (its canvas is `input_size` square)."""
    size = preprocess.input_size
    if kind == "padding":
        pad = default_pad(size) if pad is None else pad
        if pad < 1 or 2 * pad >= size:
            raise ValueError(f"tdmr.pad={pad} does not fit the teacher's {size}px input: set tdmr.pad between 1 "
                             f"and {(size - 1) // 2}, or leave it unset for {default_pad(size)}")
        return PaddingPrompt(size, preprocess, pad=pad)
    if kind == "full":
        return FullImagePrompt(size, preprocess)
    if kind == "none":
        return NoPrompt(size, preprocess)
    raise ValueError(f"tdmr.prompt must be one of {PROMPTS}, got {kind!r}")


def num_source_classes(teacher: nn.Module) -> int:
    """Width of the teacher's own classifier output (its source classes)."""
    n = getattr(teacher, "num_classes", None)
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"teacher {type(teacher).__name__} has no source classifier (num_classes={n!r}); "
                         f"build it with tdmr.source_classes > 0 or use tdmr.label_mapping=linear-features")
    return n


def build_reprogrammed(teacher: nn.Module, cfg: TDMRConfig, labeled: ImageSet, batch_size: int = 256,
                       device: torch.device | str = "cpu") -> tuple[ReprogrammedTeacher, dict[str, Any]]:
    """The frozen `teacher` behind the configured prompt and label map, on `device`, before training.

    FLM-based maps are computed here from the labeled set seen through the initial prompt; the info dict
    says how many teacher forwards that took (`label_mapping_images`) and the map itself (`mapping`).
    """
    if cfg.label_mapping not in LABEL_MAPPINGS:
        raise ValueError(f"tdmr.label_mapping must be one of {LABEL_MAPPINGS}, got {cfg.label_mapping!r}")
    prompt = make_prompt(cfg.prompt, teacher.preprocess, cfg.pad)
    num_target = labeled.num_classes
    info: dict[str, Any] = {"prompt": cfg.prompt, "label_mapping": cfg.label_mapping,
                            "prompt_params": prompt.num_parameters, "label_mapping_images": 0, "mapping": None}
    if cfg.label_mapping == "linear-features":
        head = LinearLabelMap(int(teacher.num_features), num_target)
        return ReprogrammedTeacher(teacher, prompt, head, head_input="features").to(device), info
    num_source = num_source_classes(teacher)
    if num_target > num_source:
        raise ValueError(f"a one-to-one label map needs at most {num_source} target classes, the task has "
                         f"{num_target}; use tdmr.label_mapping=linear-features")
    model = ReprogrammedTeacher(teacher, prompt, MappedHead(torch.arange(num_target), num_source)).to(device)
    probs = source_probabilities(model, labeled.images, batch_size, device)
    mapping = frequency_label_mapping(probs, labeled.labels, num_target)
    info.update(label_mapping_images=len(labeled), mapping=mapping.tolist())
    if cfg.label_mapping == "linear-logits":
        head = LinearLabelMap(num_source, num_target, init_mapping=mapping)
        return ReprogrammedTeacher(teacher, prompt, head, head_input="logits").to(device), info
    model.head.set_mapping(mapping)
    return model, info


class RemappingTask(ReprogramTask):
    """`ReprogramTask` that redoes FLM with the current prompt every `period` optimizer steps (ILM).

    The remap runs at the start of steps period, 2 * period, ... (the initial map comes from
    `build_reprogrammed`), on the whole labeled set `images` `[N, C, H, W]` / `labels` `[N]`;
    `remaps` and `mapping_images` (teacher forwards spent on it) count the cost.
    """

    def __init__(self, model: ReprogrammedTeacher, images: Images, labels: torch.Tensor, period: int,
                 augment: str = "crop-flip", label_smoothing: float = 0.0, seed: int = 0,
                 batch_size: int = 256) -> None:
        super().__init__(model, augment, label_smoothing, seed)
        if not isinstance(model.head, MappedHead):
            raise ValueError(f"ILM re-maps a fixed MappedHead, the model has {type(model.head).__name__}")
        if period < 1:
            raise ValueError(f"tdmr.ilm_period must be at least 1 step, got {period}")
        self.images, self.labels, self.period, self.batch_size = images, labels, int(period), batch_size
        self.step = self.remaps = self.mapping_images = 0

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.model.training:
            if self.step > 0 and self.step % self.period == 0:
                device = batch["images"].device
                iterative_label_mapping(
                    lambda: source_probabilities(self.model, self.images, self.batch_size, device),
                    self.labels, self.model.head.num_target, self.model.head)
                self.remaps += 1
                self.mapping_images += len(self.images)
            self.step += 1
        return super().__call__(batch)
