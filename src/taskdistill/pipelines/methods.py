"""The methods a sweep compares, on the same student architecture and the same labeled split.

Each method is a recipe: a short chain of the shared stages that returns a result record. They differ
only in which stages they chain and with which task; the loop underneath is the same for all.

- `teacher-linear`: the pretrained teacher with a linear probe (upper reference).
- `teacher-finetune`: the teacher finetuned on the labels (upper reference; shared by task-oriented).
- `scratch`: the student trained on the labels only.
- `pretrained-finetune`: the student from ImageNet weights, finetuned on the labels.
- `task-agnostic`: the student matches the frozen, not finetuned teacher's features over the transfer
  set (projector + cosine/contrastive), then is finetuned on the labels.
- `task-oriented`: distill the finetuned teacher's predictions, then finetune on the labels.
- `task-oriented-pretrained`: the same, starting from the pretrained student.
- `tdmr`: Task-Driven Model Reprogramming: reprogram the frozen pretrained teacher (prompt + label map),
  distil its proxy-space outputs progressively (source classes, then task classes), finetune (docs/tdmr.md).
- `distill-linear-probe`: task-oriented distillation from the linear-probed (not finetuned) teacher, then
  finetune; the plain-distillation reference for `tdmr`.
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

from taskdistill.cache.teacher_outputs import cached_teacher_outputs, weights_hash
from taskdistill.config.load import to_dict
from taskdistill.config.schema import RunConfig
from taskdistill.engine.batches import ViewBatches
from taskdistill.engine.checkpoint import load_checkpoint, save_checkpoint
from taskdistill.engine.compute import count_parameters, forward_gflops
from taskdistill.engine.loop import fit
from taskdistill.errors import ConfigError
from taskdistill.pipelines.prepare import PreparedData
from taskdistill.pipelines.stages import (
    build_model,
    distill,
    evaluate_model,
    schedule_of,
    supervised,
    train_teacher,
)
from taskdistill.reprogram.stages import (
    progressive_distill,
    proxy_outputs,
    reprogram_teacher,
    teacher_accuracy,
)
from taskdistill.tasks.feature_distill import FeatureDistillTask, make_projector


@dataclass
class Cell:
    """One grid cell's inputs: the config (seed and budget set), its data, and where shared work lives."""

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
        """The teacher finetuned on this cell's labels: trained once, then loaded from `teacher_dir`."""
        stem = self.teacher_dir / f"b{self.budget}-s{self.cfg.seed}"
        if stem.with_suffix(".json").is_file():
            model, meta = load_checkpoint(stem, expect_classes=self.data.class_names)
            return model.to(self.device), meta["train_info"]
        teacher = self.teacher()
        start = time.perf_counter()
        info = train_teacher(teacher, self.cfg.teacher, self.data.labeled, self.cfg.seed, self.device)
        info["seconds"] = round(time.perf_counter() - start, 2)
        save_checkpoint(stem, teacher, self.data.class_names, stage="teacher", config=to_dict(self.cfg),
                        extra={"train_info": info})
        return teacher, info


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


def _record(cell: Cell, method: str, model: nn.Module, meter: Meter, teacher: nn.Module | None) -> dict[str, Any]:
    metrics = evaluate_model(model, cell.data.test, cell.device, cell.cfg.eval_batch_size, f"evaluate {method}")
    rec: dict[str, Any] = {
        "method": method, "budget": cell.budget, "seed": cell.cfg.seed,
        "top1": metrics["top1"], "macro_accuracy": metrics["macro_accuracy"],
        "seconds": round(sum(meter.stage_seconds.values()), 2), "stage_seconds": meter.stage_seconds,
        "teacher_images": meter.teacher_images, "student_images": meter.student_images,
        "model": model.spec.name, "params": count_parameters(model), "gflops": round(forward_gflops(model), 4),
        "per_class_accuracy": metrics["per_class_accuracy"],
    }
    if teacher is not None:
        rec["teacher_model"] = teacher.spec.name
        rec["teacher_params"] = count_parameters(teacher)
        rec["teacher_gflops"] = round(forward_gflops(teacher), 4)
    return rec


def _finetune(cell: Cell, model: nn.Module, meter: Meter, opt_name: str = "finetune") -> None:
    """Cross-entropy on the labels with the student schedule `opt_name` (finetune, scratch, pretrained_finetune)."""
    opt = getattr(cell.cfg.student, opt_name)
    info = supervised(model, cell.data.labeled, opt, cell.cfg.seed, cell.device, f"student {opt_name}")
    meter.add(opt_name, info["seconds"], student_images=info["images"])


def _with_teacher(cell: Cell, meter: Meter) -> nn.Module:
    teacher, info = cell.finetuned_teacher()
    meter.add("teacher", info["seconds"], teacher_images=info["teacher_train_images"])
    return teacher


def teacher_linear(cell: Cell) -> dict[str, Any]:
    meter, teacher = Meter(), cell.teacher()
    probe = dataclasses.replace(cell.cfg.teacher, mode="linear-probe")
    start = time.perf_counter()
    info = train_teacher(teacher, probe, cell.data.labeled, cell.cfg.seed, cell.device)
    meter.add("teacher", time.perf_counter() - start, teacher_images=info["teacher_train_images"])
    return _record(cell, "teacher-linear", teacher, meter, teacher)


def teacher_finetune(cell: Cell) -> dict[str, Any]:
    meter = Meter()
    teacher = _with_teacher(cell, meter)
    return _record(cell, "teacher-finetune", teacher, meter, teacher)


def scratch(cell: Cell) -> dict[str, Any]:
    meter, student = Meter(), cell.student()
    _finetune(cell, student, meter, "scratch")
    return _record(cell, "scratch", student, meter, None)


def pretrained_finetune(cell: Cell) -> dict[str, Any]:
    meter, student = Meter(), cell.student(pretrained=True)
    _finetune(cell, student, meter, "pretrained_finetune")
    return _record(cell, "pretrained-finetune", student, meter, None)


def task_agnostic(cell: Cell) -> dict[str, Any]:
    """Feature matching against the frozen pretrained teacher (no labels), then finetune on the labels."""
    meter, teacher, student = Meter(), cell.teacher(), cell.student()
    fd, views = cell.cfg.feature_distill, cell.cfg.distill.transfer.views
    feats, cache = cached_teacher_outputs(teacher, cell.data.transfer, views, cell.cfg.seed, cell.cache_dir,
                                          cell.cfg.eval_batch_size, cell.device, kind="features")
    meter.add("teacher_outputs", cache["seconds"], teacher_images=cache["teacher_images"])
    projector = make_projector(student, feats.shape[-1], fd.projector_hidden).to(cell.device)
    task = FeatureDistillTask(student, projector, feats, fd.loss, fd.contrastive_temperature, cell.cfg.seed)
    result = fit(task, ViewBatches(cell.data.transfer, views, cell.cfg.seed), schedule_of(fd.train),
                 seed=cell.cfg.seed, device=cell.device, desc="feature distill")
    meter.add("distill", result.seconds, student_images=result.images_seen)
    _finetune(cell, student, meter)
    return _record(cell, "task-agnostic", student, meter, teacher)


def _task_oriented(cell: Cell, pretrained: bool, name: str) -> dict[str, Any]:
    meter = Meter()
    teacher = _with_teacher(cell, meter)
    student = cell.student(pretrained=pretrained)
    dcfg = cell.cfg.distill
    if pretrained and dcfg.pretrained_student_lr is not None:
        dcfg = dataclasses.replace(dcfg, train=dataclasses.replace(dcfg.train, lr=dcfg.pretrained_student_lr))
    info = distill(student, teacher, cell.data.transfer, dcfg, cell.cache_dir, cell.cfg.seed,
                   cell.device, cell.cfg.eval_batch_size)
    meter.add("teacher_outputs", info["cache"]["seconds"], teacher_images=info["teacher_images"])
    meter.add("distill", info["seconds"], student_images=info["images"])
    _finetune(cell, student, meter)
    return _record(cell, name, student, meter, teacher)


def task_oriented(cell: Cell) -> dict[str, Any]:
    return _task_oriented(cell, False, "task-oriented")


def task_oriented_pretrained(cell: Cell) -> dict[str, Any]:
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
    rec = _record(cell, "tdmr", student, meter, teacher)
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
    meter, teacher = Meter(), cell.teacher()
    probe = dataclasses.replace(cell.cfg.teacher, mode="linear-probe")
    start = time.perf_counter()
    info = train_teacher(teacher, probe, cell.data.labeled, cell.cfg.seed, cell.device)
    meter.add("teacher", time.perf_counter() - start, teacher_images=info["teacher_train_images"])
    student = cell.student()
    dist = distill(student, teacher, cell.data.transfer, cell.cfg.distill, cell.cache_dir, cell.cfg.seed,
                   cell.device, cell.cfg.eval_batch_size)
    meter.add("teacher_outputs", dist["cache"]["seconds"], teacher_images=dist["teacher_images"])
    meter.add("distill", dist["seconds"], student_images=dist["images"])
    _finetune(cell, student, meter)
    rec = _record(cell, "distill-linear-probe", student, meter, teacher)
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
