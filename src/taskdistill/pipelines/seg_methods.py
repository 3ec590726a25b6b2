"""The methods a segmentation sweep compares (`task: segmentation`), on one student and one labeled split.

Same recipes as classification (`pipelines/methods.py`), per pixel:
- `teacher-linear`: the pretrained teacher backbone, frozen, with a trained FPN head (reference).
- `teacher-finetune`: the teacher's head trained, then the whole teacher finetuned (reference; shared).
- `scratch`: the student trained on the labeled images only.
- `pretrained-finetune`: the student from ImageNet weights (backbone), trained on the labeled images.
- `task-agnostic`: the student's dense features match the frozen pretrained teacher's backbone feature map
  over the transfer set (projector + cosine per location), then the student is finetuned on the labels.
- `task-oriented`: per-pixel KL to the finetuned teacher's cached softened logits, then finetune.
- `task-oriented-pretrained`: the same from the pretrained student.
Budgets count labeled images. Records carry `miou` (the sweep report's metric), `pixel_accuracy`,
`mean_accuracy` and `per_class_iou`, plus the cost fields of classification records.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskdistill.config.load import to_dict
from taskdistill.config.schema import RunConfig
from taskdistill.engine.checkpoint import load_checkpoint, save_checkpoint
from taskdistill.engine.compute import count_parameters, forward_gflops
from taskdistill.pipelines.methods import Meter, check_methods
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
    """One grid cell: the config (seed and budget set), its data, and where shared work lives."""

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
        """The teacher trained on this cell's labeled images: once, then loaded from `teacher_dir`."""
        stem = self.teacher_dir / f"seg-b{self.budget}-s{self.cfg.seed}"
        if stem.with_suffix(".json").is_file():
            model, meta = load_checkpoint(stem, expect_classes=self.data.class_names)
            return model.to(self.device), meta["train_info"]
        teacher = self.teacher()
        start = time.perf_counter()
        info = train_seg_teacher(teacher, self.cfg.teacher, self.data.labeled, self.cfg.seed, self.device)
        info["seconds"] = round(time.perf_counter() - start, 2)
        save_checkpoint(stem, teacher, self.data.class_names, stage="teacher", config=to_dict(self.cfg),
                        extra={"train_info": info, **seg_checkpoint_extra(self.cfg)})
        return teacher, info


def _record(cell: SegCell, method: str, model: nn.Module, meter: Meter, teacher: nn.Module | None) -> dict[str, Any]:
    m = evaluate_seg_model(model, cell.data.test, cell.device, cell.cfg.eval_batch_size, f"evaluate {method}")
    rec: dict[str, Any] = {
        "method": method, "budget": cell.budget, "seed": cell.cfg.seed, "task": "segmentation",
        "budget_unit": SEG_BUDGET_UNIT,
        "miou": m["miou"], "pixel_accuracy": m["pixel_accuracy"], "mean_accuracy": m["mean_accuracy"],
        "seconds": round(sum(meter.stage_seconds.values()), 2), "stage_seconds": meter.stage_seconds,
        "teacher_images": meter.teacher_images, "student_images": meter.student_images,
        "model": model.spec.name, "params": count_parameters(model), "gflops": round(forward_gflops(model), 4),
        "per_class_iou": m["per_class_iou"],
    }
    if teacher is not None:
        rec.update({"teacher_model": teacher.spec.name, "teacher_params": count_parameters(teacher),
                    "teacher_gflops": round(forward_gflops(teacher), 4)})
    return rec


def _finetune(cell: SegCell, model: nn.Module, meter: Meter, opt_name: str = "finetune") -> None:
    """Per-pixel cross-entropy on the labeled images with the student schedule `opt_name`."""
    opt = getattr(cell.cfg.student, opt_name)
    info = seg_supervised(model, cell.data.labeled, opt, cell.cfg.seed, cell.device, f"student {opt_name}")
    meter.add(opt_name, info["seconds"], student_images=info["images"])


def _with_teacher(cell: SegCell, meter: Meter) -> nn.Module:
    teacher, info = cell.finetuned_teacher()
    meter.add("teacher", info["seconds"], teacher_images=info["teacher_train_images"])
    return teacher


def teacher_linear(cell: SegCell) -> dict[str, Any]:
    meter, teacher = Meter(), cell.teacher()
    probe = dataclasses.replace(cell.cfg.teacher, mode="linear-probe")
    start = time.perf_counter()
    info = train_seg_teacher(teacher, probe, cell.data.labeled, cell.cfg.seed, cell.device)
    meter.add("teacher", time.perf_counter() - start, teacher_images=info["teacher_train_images"])
    return _record(cell, "teacher-linear", teacher, meter, teacher)


def teacher_finetune(cell: SegCell) -> dict[str, Any]:
    meter = Meter()
    teacher = _with_teacher(cell, meter)
    return _record(cell, "teacher-finetune", teacher, meter, teacher)


def scratch(cell: SegCell) -> dict[str, Any]:
    meter, student = Meter(), cell.student()
    _finetune(cell, student, meter, "scratch")
    return _record(cell, "scratch", student, meter, None)


def pretrained_finetune(cell: SegCell) -> dict[str, Any]:
    meter, student = Meter(), cell.student(pretrained=True)
    _finetune(cell, student, meter, "pretrained_finetune")
    return _record(cell, "pretrained-finetune", student, meter, None)


def task_agnostic(cell: SegCell) -> dict[str, Any]:
    """Dense feature matching to the frozen pretrained teacher backbone (no labels), then finetune."""
    meter, teacher, student = Meter(), cell.teacher(), cell.student()
    info = seg_feature_distill(student, teacher, cell.data.transfer, cell.cfg.feature_distill,
                               cell.cfg.distill.transfer.views, cell.cfg.segmentation, cell.cache_dir, cell.cfg.seed,
                               cell.device, cell.cfg.eval_batch_size)
    meter.add("teacher_outputs", info["cache"]["seconds"], teacher_images=info["teacher_images"])
    meter.add("distill", info["seconds"], student_images=info["images"])
    _finetune(cell, student, meter)
    return _record(cell, "task-agnostic", student, meter, teacher)


def _task_oriented(cell: SegCell, pretrained: bool, name: str) -> dict[str, Any]:
    meter = Meter()
    teacher = _with_teacher(cell, meter)
    student = cell.student(pretrained=pretrained)
    dcfg = cell.cfg.distill
    if pretrained and dcfg.pretrained_student_lr is not None:
        dcfg = dataclasses.replace(dcfg, train=dataclasses.replace(dcfg.train, lr=dcfg.pretrained_student_lr))
    info = seg_distill(student, teacher, cell.data.transfer, dcfg, cell.cfg.segmentation, cell.cache_dir,
                       cell.cfg.seed, cell.device, cell.cfg.eval_batch_size)
    meter.add("teacher_outputs", info["cache"]["seconds"], teacher_images=info["teacher_images"])
    meter.add("distill", info["seconds"], student_images=info["images"])
    _finetune(cell, student, meter)
    return _record(cell, name, student, meter, teacher)


def task_oriented(cell: SegCell) -> dict[str, Any]:
    return _task_oriented(cell, False, "task-oriented")


def task_oriented_pretrained(cell: SegCell) -> dict[str, Any]:
    return _task_oriented(cell, True, "task-oriented-pretrained")


SEG_METHODS: dict[str, Callable[[SegCell], dict[str, Any]]] = {
    "teacher-linear": teacher_linear,
    "teacher-finetune": teacher_finetune,
    "scratch": scratch,
    "pretrained-finetune": pretrained_finetune,
    "task-agnostic": task_agnostic,
    "task-oriented": task_oriented,
    "task-oriented-pretrained": task_oriented_pretrained,
}


def check_seg_methods(names: list[str]) -> None:
    check_methods(names, SEG_METHODS, "segmentation")
