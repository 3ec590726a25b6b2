"""The methods a sweep compares, on the same student architecture and the same labeled split.

Each method is a recipe: a short chain of stages that returns a result record. The recipes shared by
classification and segmentation are written once against `MethodCell`, the grid cell's stages: `Cell`
here (classification) and `SegCell` (pipelines/seg_methods.py, per pixel) supply them. The loop underneath
is the same for all.

- `teacher-linear`: the pretrained teacher with a linear probe (upper reference).
- `teacher-finetune`: the teacher finetuned on the labels (upper reference; shared by task-oriented).
- `scratch`: the student trained on the labels only.
- `pretrained-finetune`: the student from ImageNet weights, finetuned on the labels.
- `task-agnostic`: the student matches the frozen, not finetuned teacher's features over the transfer
  set (projector + cosine/contrastive), then is finetuned on the labels.
- `task-oriented`: distill the finetuned teacher's predictions, then finetune on the labels.
- `task-oriented-pretrained`: the same, starting from the pretrained student.
- `tdmr` (classification): Task-Driven Model Reprogramming: reprogram the frozen pretrained teacher (prompt +
  label map), distil its proxy-space outputs progressively (source classes, then task classes), finetune
  (docs/tdmr.md).
- `distill-linear-probe` (classification): task-oriented distillation from the linear-probed (not finetuned)
  teacher, then finetune; the plain-distillation reference for `tdmr`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from taskdistill.cache.teacher_outputs import weights_hash
from taskdistill.config.load import to_dict
from taskdistill.config.schema import DistillConfig, OptimConfig, RunConfig, TeacherConfig
from taskdistill.engine.checkpoint import load_checkpoint, save_checkpoint
from taskdistill.engine.compute import count_parameters, forward_gflops
from taskdistill.errors import ConfigError
from taskdistill.pipelines.prepare import PreparedData
from taskdistill.pipelines.stages import (
    build_model,
    distill,
    evaluate_model,
    feature_distill,
    supervised,
    train_teacher,
)
from taskdistill.reprogram.stages import (
    progressive_distill,
    proxy_outputs,
    reprogram_teacher,
    teacher_accuracy,
)


class Meter:
    """Accumulates a method's cost: images through teacher and student, seconds per stage."""

    def __init__(self) -> None:
        self.teacher_images = 0
        self.student_images = 0
        self.stage_seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float, teacher_images: int = 0, student_images: int = 0) -> None:
        self.stage_seconds[stage] = round(self.stage_seconds.get(stage, 0.0) + seconds, 2)
        self.teacher_images += teacher_images
        self.student_images += student_images


class MethodCell(Protocol):
    """One grid cell as the shared recipes see it: its config (seed and budget set) and its stages.

    The distillation stages return their fit info (`seconds`, `images`) with the cache's (`cache.seconds`,
    `teacher_images`); the supervised stage and the teacher's return their fit info.
    """

    cfg: RunConfig
    data: Any  # PreparedData or PreparedSegData: the cell's sets, class names and decode `policy`

    def student(self, pretrained: bool = False) -> nn.Module: ...

    def teacher(self) -> nn.Module: ...

    def finetuned_teacher(self) -> tuple[nn.Module, dict[str, Any]]: ...

    def train_teacher(self, teacher: nn.Module, cfg: TeacherConfig) -> dict[str, Any]: ...

    def supervised(self, model: nn.Module, opt: OptimConfig, desc: str) -> dict[str, Any]: ...

    def distill(self, student: nn.Module, teacher: nn.Module, cfg: DistillConfig) -> dict[str, Any]: ...

    def feature_distill(self, student: nn.Module, teacher: nn.Module) -> dict[str, Any]: ...

    def record(self, method: str, model: nn.Module, meter: Meter, teacher: nn.Module | None) -> dict[str, Any]: ...


def load_or_train_teacher(cell: MethodCell, stem: Path, class_names: list[str], device: torch.device,
                          extra: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The cell's teacher trained on its labels: trained once and saved at `stem`, then loaded from there."""
    if stem.with_suffix(".json").is_file():
        model, meta = load_checkpoint(stem, expect_classes=class_names)
        return model.to(device), meta["train_info"]
    teacher = cell.teacher()
    start = time.perf_counter()
    info = cell.train_teacher(teacher, cell.cfg.teacher)
    info["seconds"] = round(time.perf_counter() - start, 2)
    save_checkpoint(stem, teacher, class_names, stage="teacher", config=to_dict(cell.cfg),
                    extra={"train_info": info, **(extra or {})}, decode=cell.data.policy)
    return teacher, info


def model_cost(model: nn.Module, prefix: str = "") -> dict[str, Any]:
    """`{prefix}model`, `{prefix}params` and `{prefix}gflops` (forward, at the model's input size)."""
    return {f"{prefix}model": model.spec.name, f"{prefix}params": count_parameters(model),
            f"{prefix}gflops": round(forward_gflops(model), 4)}


def cost_fields(meter: Meter, model: nn.Module, teacher: nn.Module | None) -> dict[str, Any]:
    """The compute accounting every record carries."""
    rec = {"seconds": round(sum(meter.stage_seconds.values()), 2), "stage_seconds": meter.stage_seconds,
           "teacher_images": meter.teacher_images, "student_images": meter.student_images, **model_cost(model)}
    return rec | (model_cost(teacher, "teacher_") if teacher is not None else {})


@dataclass
class Cell:
    """A classification grid cell: the config (seed and budget set), its data, and where shared work lives."""

    cfg: RunConfig
    data: PreparedData
    device: torch.device
    cache_dir: Path
    teacher_dir: Path  # finetuned teachers, one per (budget, seed), shared by every method that needs one

    @property
    def budget(self) -> int | None:
        return self.cfg.data.labels_per_class

    def seeded(self, offset: int) -> None:
        torch.manual_seed(self.cfg.seed * 1000 + offset)

    def student(self, pretrained: bool = False) -> nn.Module:
        self.seeded(1)  # every method's student starts from the same random init
        spec = dataclasses.replace(self.cfg.student.model, pretrained=pretrained)
        return build_model(spec, len(self.data.class_names)).to(self.device)

    def teacher(self) -> nn.Module:
        self.seeded(0)
        return build_model(self.cfg.teacher.model, len(self.data.class_names)).to(self.device)

    def finetuned_teacher(self) -> tuple[nn.Module, dict[str, Any]]:
        stem = self.teacher_dir / f"b{self.budget}-s{self.cfg.seed}"
        return load_or_train_teacher(self, stem, self.data.class_names, self.device)

    def train_teacher(self, teacher: nn.Module, cfg: TeacherConfig) -> dict[str, Any]:
        return train_teacher(teacher, cfg, self.data.labeled, self.cfg.seed, self.device)

    def supervised(self, model: nn.Module, opt: OptimConfig, desc: str) -> dict[str, Any]:
        return supervised(model, self.data.labeled, opt, self.cfg.seed, self.device, desc)

    def distill(self, student: nn.Module, teacher: nn.Module, cfg: DistillConfig) -> dict[str, Any]:
        return distill(student, teacher, self.data.transfer, cfg, self.cache_dir, self.cfg.seed, self.device,
                       self.cfg.eval_batch_size)

    def feature_distill(self, student: nn.Module, teacher: nn.Module) -> dict[str, Any]:
        return feature_distill(student, teacher, self.data.transfer, self.cfg.feature_distill,
                               self.cfg.distill.transfer.views, self.cache_dir, self.cfg.seed, self.device,
                               self.cfg.eval_batch_size)

    def record(self, method: str, model: nn.Module, meter: Meter, teacher: nn.Module | None) -> dict[str, Any]:
        m = evaluate_model(model, self.data.test, self.device, self.cfg.eval_batch_size, f"evaluate {method}")
        return {"method": method, "budget": self.budget, "seed": self.cfg.seed,
                "top1": m["top1"], "macro_accuracy": m["macro_accuracy"], **cost_fields(meter, model, teacher),
                "per_class_accuracy": m["per_class_accuracy"]}


def _finetune(cell: MethodCell, model: nn.Module, meter: Meter, opt_name: str = "finetune") -> None:
    """Supervised training on the labels with the student schedule `opt_name` (finetune, scratch,
    pretrained_finetune)."""
    info = cell.supervised(model, getattr(cell.cfg.student, opt_name), f"student {opt_name}")
    meter.add(opt_name, info["seconds"], student_images=info["images"])


def _with_teacher(cell: MethodCell, meter: Meter) -> nn.Module:
    teacher, info = cell.finetuned_teacher()
    meter.add("teacher", info["seconds"], teacher_images=info["teacher_train_images"])
    return teacher


def _linear_probed_teacher(cell: MethodCell, meter: Meter) -> nn.Module:
    """The pretrained teacher with a task head trained on its frozen backbone (not stored)."""
    teacher = cell.teacher()
    start = time.perf_counter()
    info = cell.train_teacher(teacher, dataclasses.replace(cell.cfg.teacher, mode="linear-probe"))
    meter.add("teacher", time.perf_counter() - start, teacher_images=info["teacher_train_images"])
    return teacher


def _add_distill(meter: Meter, info: dict[str, Any]) -> None:
    meter.add("teacher_outputs", info["cache"]["seconds"], teacher_images=info["teacher_images"])
    meter.add("distill", info["seconds"], student_images=info["images"])


def teacher_linear(cell: MethodCell) -> dict[str, Any]:
    meter = Meter()
    teacher = _linear_probed_teacher(cell, meter)
    return cell.record("teacher-linear", teacher, meter, teacher)


def teacher_finetune(cell: MethodCell) -> dict[str, Any]:
    meter = Meter()
    teacher = _with_teacher(cell, meter)
    return cell.record("teacher-finetune", teacher, meter, teacher)


def scratch(cell: MethodCell) -> dict[str, Any]:
    meter, student = Meter(), cell.student()
    _finetune(cell, student, meter, "scratch")
    return cell.record("scratch", student, meter, None)


def pretrained_finetune(cell: MethodCell) -> dict[str, Any]:
    meter, student = Meter(), cell.student(pretrained=True)
    _finetune(cell, student, meter, "pretrained_finetune")
    return cell.record("pretrained-finetune", student, meter, None)


def task_agnostic(cell: MethodCell) -> dict[str, Any]:
    """Feature matching against the frozen pretrained teacher (no labels), then finetune on the labels."""
    meter, teacher, student = Meter(), cell.teacher(), cell.student()
    _add_distill(meter, cell.feature_distill(student, teacher))
    _finetune(cell, student, meter)
    return cell.record("task-agnostic", student, meter, teacher)


def _task_oriented(cell: MethodCell, pretrained: bool, name: str) -> dict[str, Any]:
    meter = Meter()
    teacher = _with_teacher(cell, meter)
    student = cell.student(pretrained=pretrained)
    dcfg = cell.cfg.distill
    if pretrained and dcfg.pretrained_student_lr is not None:
        dcfg = dataclasses.replace(dcfg, train=dataclasses.replace(dcfg.train, lr=dcfg.pretrained_student_lr))
    _add_distill(meter, cell.distill(student, teacher, dcfg))
    _finetune(cell, student, meter)
    return cell.record(name, student, meter, teacher)


def task_oriented(cell: MethodCell) -> dict[str, Any]:
    return _task_oriented(cell, False, "task-oriented")


def task_oriented_pretrained(cell: MethodCell) -> dict[str, Any]:
    return _task_oriented(cell, True, "task-oriented-pretrained")


def _source_teacher(cell: Cell) -> nn.Module:
    """The cell's pretrained teacher with its own source classifier (`tdmr.source_classes` classes)."""
    cell.seeded(0)
    return build_model(cell.cfg.teacher.model, cell.cfg.tdmr.source_classes).to(cell.device)


def tdmr(cell: Cell) -> dict[str, Any]:
    """Reprogram the frozen teacher on the labels, distil its proxy space progressively, finetune.

    The teacher's weights are hashed before and after: a change raises instead of recording a result.
    Teacher images count reprogramming forward+backward passes, label-mapping forwards and the proxy
    cache's forwards; the reprogrammed teacher's own test accuracy is reported but not counted as cost.
    """
    cfg, meter, views, seed = cell.cfg.tdmr, Meter(), cell.cfg.distill.transfer.views, cell.cfg.seed
    teacher = _source_teacher(cell)
    before = weights_hash(teacher)
    model, rep = reprogram_teacher(teacher, cell.data.labeled, cfg, seed, cell.device, cell.cfg.eval_batch_size)
    meter.add("reprogram", rep["seconds"], teacher_images=rep["teacher_images"])
    source, target, cache = proxy_outputs(model, cell.data.transfer, cfg, views, seed, cell.cache_dir,
                                          cell.cfg.eval_batch_size, cell.device)
    meter.add("teacher_outputs", cache["seconds"], teacher_images=cache["teacher_images"])
    student = cell.student()
    dist = progressive_distill(student, source, target, cell.data.transfer, cfg, views, seed, cell.device)
    meter.add("distill", dist["seconds"], student_images=dist["images"])
    _finetune(cell, student, meter)
    teacher_top1 = (teacher_accuracy(model, cell.data.test, cell.cfg.eval_batch_size, cell.device)
                    if cfg.evaluate_teacher else None)
    after = weights_hash(teacher)
    if after != before:
        raise RuntimeError(f"tdmr changed the frozen teacher's weights (sha256 {before[:12]} -> {after[:12]}); "
                           f"only the prompt and the label map may train")
    rec = cell.record("tdmr", student, meter, teacher)
    rec.update({
        "trainable_params": rep["trainable_params"], "trainable_fraction": rep["trainable_fraction"],
        "teacher_unchanged": True, "teacher_weights_sha256": before,
        "reprogrammed_teacher_top1": teacher_top1,
        "teacher_images_detail": {"reprogram_forward_backward": rep["train_images"],
                                  "label_mapping_forward": rep["label_mapping_images"],
                                  "proxy_cache_forward": cache["teacher_images"]},
        "tdmr": {"prompt": cfg.prompt, "label_mapping": cfg.label_mapping, "mapping": rep["mapping"],
                 "remaps": rep.get("remaps", 0), "reprogram_steps": rep["steps"],
                 "reprogram_final_loss": rep["final_loss"], "schedule": cfg.schedule,
                 "ramp_fraction": cfg.ramp_fraction, "ramp_shape": cfg.ramp_shape, "distill_steps": dist["steps"],
                 "proxy_head_params": dist["proxy_head_params"],
                 "bytes_per_view": {k: cache[k]["bytes_per_view"] for k in ("source_logits", "target_logits")
                                    if k in cache}},
    })
    return rec


def distill_linear_probe(cell: Cell) -> dict[str, Any]:
    """Task-oriented distillation from the linear-probed (not finetuned) teacher, then finetune.

    The probed teacher is trained here and not stored: `cell.teacher_dir` holds finetuned teachers only.
    """
    meter = Meter()
    teacher = _linear_probed_teacher(cell, meter)
    student = cell.student()
    _add_distill(meter, cell.distill(student, teacher, cell.cfg.distill))
    _finetune(cell, student, meter)
    rec = cell.record("distill-linear-probe", student, meter, teacher)
    head = sum(p.numel() for p in teacher.get_classifier().parameters())
    rec.update({"trainable_params": head, "trainable_fraction": head / max(1, count_parameters(teacher))})
    return rec


METHODS: dict[str, Callable[[Cell], dict[str, Any]]] = {
    "teacher-linear": teacher_linear,
    "teacher-finetune": teacher_finetune,
    "scratch": scratch,
    "pretrained-finetune": pretrained_finetune,
    "task-agnostic": task_agnostic,
    "task-oriented": task_oriented,
    "task-oriented-pretrained": task_oriented_pretrained,
    "tdmr": tdmr,
    "distill-linear-probe": distill_linear_probe,
}


def check_methods(names: list[str], registry: dict[str, Any] | None = None, task: str | None = None) -> None:
    """Raise a ConfigError naming the closest known method for any name not in `registry` (default METHODS);
    `task` names the task kind whose registry it is, for the message."""
    import difflib

    registry = METHODS if registry is None else registry
    for n in names:
        if n not in registry:
            close = difflib.get_close_matches(n, list(registry), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            if task is None:
                raise ConfigError(f"unknown method '{n}'.{hint} Methods: {', '.join(registry)}")
            raise ConfigError(f"method '{n}' is not available for task: {task}.{hint} "
                              f"{task.capitalize()} methods: {', '.join(registry)}")
