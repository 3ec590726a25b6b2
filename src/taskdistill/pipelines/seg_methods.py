"""The segmentation grid cell (`task: segmentation`): the shared recipes of `pipelines/methods.py`, per pixel.

`SegCell` supplies the stages the recipes chain: the teacher and student are `seg:<backbone>` FPN models,
supervised training is per-pixel cross-entropy, `task-oriented` distils the finetuned teacher's cached
softened logits per pixel (KL), `task-agnostic` matches the frozen pretrained teacher's dense backbone
features (projector + cosine per location). Budgets count labeled images. Records carry `miou` (the sweep
report's metric), `pixel_accuracy`, `mean_accuracy` and `per_class_iou`, plus the cost fields of
classification records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskdistill.config.schema import DistillConfig, OptimConfig, RunConfig, TeacherConfig
from taskdistill.pipelines import methods
from taskdistill.pipelines.methods import Meter, check_methods, cost_fields, load_or_train_teacher
from taskdistill.pipelines.seg_prepare import PreparedSegData
from taskdistill.pipelines.seg_stages import (
    build_seg_model,
    evaluate_seg_model,
    seg_distill,
    seg_feature_distill,
    seg_supervised,
    train_seg_teacher,
)

SEG_METRIC = "miou"
SEG_BUDGET_UNIT = "labeled images"


def seg_checkpoint_extra(cfg: RunConfig) -> dict[str, Any]:
    """What a segmentation checkpoint records besides the weights (read by `taskdistill predict`)."""
    return {"task": "segmentation", "ignore_index": cfg.segmentation.ignore_index}


@dataclass
class SegCell:
    """A segmentation grid cell: the config (seed and budget set), its data, and where shared work lives."""

    cfg: RunConfig
    data: PreparedSegData
    device: torch.device
    cache_dir: Path
    teacher_dir: Path

    @property
    def budget(self) -> int:
        return self.cfg.segmentation.labeled_images

    def seeded(self, offset: int) -> None:
        torch.manual_seed(self.cfg.seed * 1000 + offset)

    def student(self, pretrained: bool = False) -> nn.Module:
        self.seeded(1)  # every method's student starts from the same random init (head included)
        spec = dataclasses.replace(self.cfg.student.model, pretrained=pretrained)
        return build_seg_model(spec, len(self.data.class_names), self.cfg.segmentation).to(self.device)

    def teacher(self) -> nn.Module:
        self.seeded(0)
        return build_seg_model(self.cfg.teacher.model, len(self.data.class_names), self.cfg.segmentation).to(self.device)

    def finetuned_teacher(self) -> tuple[nn.Module, dict[str, Any]]:
        stem = self.teacher_dir / f"seg-b{self.budget}-s{self.cfg.seed}"
        return load_or_train_teacher(self, stem, self.data.class_names, self.device, seg_checkpoint_extra(self.cfg))

    def train_teacher(self, teacher: nn.Module, cfg: TeacherConfig) -> dict[str, Any]:
        return train_seg_teacher(teacher, cfg, self.data.labeled, self.cfg.seed, self.device)

    def supervised(self, model: nn.Module, opt: OptimConfig, desc: str) -> dict[str, Any]:
        return seg_supervised(model, self.data.labeled, opt, self.cfg.seed, self.device, desc)

    def distill(self, student: nn.Module, teacher: nn.Module, cfg: DistillConfig) -> dict[str, Any]:
        return seg_distill(student, teacher, self.data.transfer, cfg, self.cfg.segmentation, self.cache_dir,
                           self.cfg.seed, self.device, self.cfg.eval_batch_size)

    def feature_distill(self, student: nn.Module, teacher: nn.Module) -> dict[str, Any]:
        return seg_feature_distill(student, teacher, self.data.transfer, self.cfg.feature_distill,
                                   self.cfg.distill.transfer.views, self.cfg.segmentation, self.cache_dir,
                                   self.cfg.seed, self.device, self.cfg.eval_batch_size)

    def record(self, method: str, model: nn.Module, meter: Meter, teacher: nn.Module | None) -> dict[str, Any]:
        m = evaluate_seg_model(model, self.data.test, self.device, self.cfg.eval_batch_size, f"evaluate {method}")
        return {"method": method, "budget": self.budget, "seed": self.cfg.seed, "task": "segmentation",
                "budget_unit": SEG_BUDGET_UNIT, "miou": m["miou"], "pixel_accuracy": m["pixel_accuracy"],
                "mean_accuracy": m["mean_accuracy"], **cost_fields(meter, model, teacher),
                "per_class_iou": m["per_class_iou"]}


SEG_METHODS: dict[str, Callable[[SegCell], dict[str, Any]]] = {
    name: methods.METHODS[name]
    for name in ("teacher-linear", "teacher-finetune", "scratch", "pretrained-finetune", "task-agnostic",
                 "task-oriented", "task-oriented-pretrained")
}


def check_seg_methods(names: list[str]) -> None:
    check_methods(names, SEG_METHODS, "segmentation")
