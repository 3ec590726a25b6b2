"""The methods a sweep compares, on the same student architecture and the same labeled split.

Each method is a recipe: a short chain of named stages on a `Cell` (pipelines/cell.py) that returns a
`MethodRecord`. The same recipe runs in `taskdistill run` (stages kept in the run folder) and in a sweep
(the teacher kept per budget and seed); the task kind (`kinds/`) supplies what differs per kind. Stage
names are the run folder's: `teacher` (shared), `student_distilled` and `student` (task-oriented),
`scratch`, and `<method>` / `<method>.<step>` for the others.

- `teacher-linear`: the pretrained teacher with a linear probe (upper reference).
- `teacher-finetune`: the teacher finetuned on the labels (upper reference; shared by task-oriented).
- `scratch`: the student trained on the labels only.
- `pretrained-finetune`: the student from ImageNet weights, finetuned on the labels.
- `task-agnostic`: the student matches the frozen, not finetuned teacher's features over the transfer
  set (projector + cosine/contrastive), then is finetuned on the labels.
- `task-oriented`: distill the finetuned teacher's predictions, then finetune on the labels.
- `task-oriented-pretrained`: the same, starting from the pretrained student.
- `pseudo-label` (classification): the finetuned teacher's hard labels on the transfer set, learned with
  cross-entropy, then finetune (the hard-label auto-labelling reference for `task-oriented`).
- `tdmr` (classification): Task-Driven Model Reprogramming: reprogram the frozen pretrained teacher (prompt +
  label map), distil its proxy-space outputs progressively (source classes, then task classes), finetune
  (docs/tdmr.md).
- `distill-linear-probe` (classification): task-oriented distillation from the linear-probed (not finetuned)
  teacher, then finetune; the plain-distillation reference for `tdmr`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from taskdistill.cache.teacher_outputs import weights_hash
from taskdistill.engine.compute import count_parameters
from taskdistill.errors import ConfigError
from taskdistill.pipelines.cell import Cell, Meter
from taskdistill.reprogram.stages import (
    progressive_distill,
    proxy_outputs,
    reprogram_teacher,
    teacher_accuracy,
)
from taskdistill.results import MethodRecord, StageCost

STUDENT = "student"
SCRATCH = "scratch"


def teacher_linear(cell: Cell) -> MethodRecord:
    """The pretrained teacher with a linear probe (upper reference)."""
    meter = Meter()
    probe_cfg = dataclasses.replace(cell.cfg.teacher, mode="linear-probe")
    teacher = cell.train_teacher("teacher-linear", "teacher (linear probe on the frozen VFM)", probe_cfg, meter)
    return cell.record("teacher-linear", teacher, meter, teacher)


def teacher_finetune(cell: Cell) -> MethodRecord:
    meter = Meter()
    teacher = cell.finetuned_teacher(meter)
    return cell.record("teacher-finetune", teacher, meter, teacher)


def scratch(cell: Cell) -> MethodRecord:
    meter, student = Meter(), cell.student()
    last = cell.supervised(SCRATCH, "student from scratch (labels only)", student, "scratch", meter)
    return cell.record("scratch", student, meter, None, last)


def pretrained_finetune(cell: Cell) -> MethodRecord:
    meter, student = Meter(), cell.student(pretrained=True)
    last = cell.supervised("pretrained-finetune", "pretrained student finetuned on the labels", student,
                           "pretrained_finetune", meter)
    return cell.record("pretrained-finetune", student, meter, None, last)


def task_agnostic(cell: Cell) -> MethodRecord:
    """Feature matching against the frozen pretrained teacher (no labels), then finetune on the labels."""
    meter, teacher, student = Meter(), cell.teacher(), cell.student()
    first = "task-agnostic.features"
    cell.feature_distill(first, "student after feature distillation", student, teacher, meter)
    last = cell.supervised("task-agnostic", "student after feature distillation + finetune", student, "finetune",
                           meter, chain=(first,))
    return cell.record("task-agnostic", student, meter, teacher, last)


def _task_oriented(cell: Cell, pretrained: bool, name: str) -> MethodRecord:
    meter = Meter()
    teacher = cell.finetuned_teacher(meter)
    student = cell.student(pretrained=pretrained)
    dcfg = cell.cfg.distill
    if pretrained and dcfg.pretrained_student_lr is not None:
        dcfg = dataclasses.replace(dcfg, train=dataclasses.replace(dcfg.train, lr=dcfg.pretrained_student_lr))
    first, final = ("student_distilled", STUDENT) if not pretrained else (f"{name}.distilled", name)
    what = "pretrained student" if pretrained else "student"
    cell.distill(first, f"{what} after distillation", student, teacher, dcfg, meter)
    last = cell.finetune(final, f"{what} after transfer (distill + finetune)", student, teacher, meter, chain=(first,))
    return cell.record(name, student, meter, teacher, last)


def task_oriented(cell: Cell) -> MethodRecord:
    """Distill the finetuned teacher's predictions over the transfer set, then finetune on the labels."""
    return _task_oriented(cell, False, "task-oriented")


def task_oriented_pretrained(cell: Cell) -> MethodRecord:
    """Task-oriented transfer into the ImageNet-pretrained student."""
    return _task_oriented(cell, True, "task-oriented-pretrained")


def pseudo_label(cell: Cell) -> MethodRecord:
    """The finetuned teacher labels the transfer set with its decisions (hard pseudo-labels, from the same cached
    outputs task-oriented distils); the student trains on them with cross-entropy, then is finetuned on the
    labels. Task-oriented minus this is what the teacher's softened distribution buys."""
    meter = Meter()
    teacher = cell.finetuned_teacher(meter)
    student = cell.student()
    first = "pseudo-label.distilled"
    cell.distill(first, "student trained on the teacher's pseudo-labels", student, teacher, cell.cfg.distill, meter,
                 hard_labels=True)
    last = cell.finetune("pseudo-label", "student after pseudo-labels + finetune", student, teacher, meter,
                         chain=(first,), hard_labels=True)
    return cell.record("pseudo-label", student, meter, teacher, last)


def tdmr(cell: Cell) -> MethodRecord:
    """Reprogram the frozen teacher on the labels, distil its proxy space progressively, finetune.

    The teacher's weights are hashed before and after: a change raises instead of recording a result.
    Teacher images count reprogramming forward+backward passes, label-mapping forwards and the proxy
    cache's forwards; the reprogrammed teacher's own test accuracy is reported but not counted as cost.
    """
    cfg, meter, views, seed = cell.cfg.tdmr, Meter(), cell.cfg.distill.transfer.views, cell.cfg.seed
    teacher = cell.teacher(num_classes=cfg.source_classes)  # with its own source classifier
    before = weights_hash(teacher)
    after_teacher = torch.get_rng_state()
    student = cell.student()
    after_student = torch.get_rng_state()

    def reprogram_and_distill() -> StageCost:
        # The prompt's and the proxy head's random inits draw from the global generator: each starts from
        # the state it has in the order teacher -> reprogram -> student -> distil (CPU generator only).
        torch.set_rng_state(after_teacher)
        model, rep = reprogram_teacher(teacher, cell.data.labeled, cfg, seed, cell.device, cell.cfg.eval_batch_size)
        source, target, cache = proxy_outputs(model, cell.data.transfer, cfg, views, seed, cell.cache_dir,
                                              cell.cfg.eval_batch_size, cell.device)
        torch.set_rng_state(after_student)
        dist = progressive_distill(student, source, target, cell.data.transfer, cfg, views, seed, cell.device)
        top1 = (teacher_accuracy(model, cell.data.test, cell.cfg.eval_batch_size, cell.device)
                if cfg.evaluate_teacher else None)
        return StageCost(seconds=dist["seconds"], student_images=dist["images"],
                         teacher_images=rep["teacher_images"] + cache["teacher_images"], cache_seconds=cache["seconds"],
                         details={"reprogram": rep, "cache": cache, "distill": dist, "teacher_top1": top1})

    first = "tdmr.distilled"
    cost = meter.scored(first, cell.stages.stage(first, "student after TDMR distillation", student,
                                                 reprogram_and_distill)).cost
    rep, cache, dist = cost.details["reprogram"], cost.details["cache"], cost.details["distill"]
    meter.add("reprogram", rep["seconds"], teacher_images=rep["teacher_images"])
    meter.add("teacher_outputs", cache["seconds"], teacher_images=cache["teacher_images"])
    meter.add("distill", dist["seconds"], student_images=dist["images"])
    last = cell.supervised("tdmr", "student after TDMR (+ finetune)", student, "finetune", meter, chain=(first,))
    after = weights_hash(teacher)
    if after != before:
        raise RuntimeError(f"tdmr changed the frozen teacher's weights (sha256 {before[:12]} -> {after[:12]}); "
                           f"only the prompt and the label map may train")
    rec = cell.record("tdmr", student, meter, teacher, last)
    rec.extra = {
        "trainable_params": rep["trainable_params"], "trainable_fraction": rep["trainable_fraction"],
        "teacher_unchanged": True, "teacher_weights_sha256": before,
        "reprogrammed_teacher_top1": cost.details["teacher_top1"],
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
    }
    return rec


def distill_linear_probe(cell: Cell) -> MethodRecord:
    """Task-oriented distillation from the linear-probed (not finetuned) teacher, then finetune: the
    plain-distillation reference for `tdmr`. The probed teacher is stage `teacher-linear`."""
    meter = Meter()
    probe_cfg = dataclasses.replace(cell.cfg.teacher, mode="linear-probe")
    teacher = cell.train_teacher("teacher-linear", "teacher (linear probe on the frozen VFM)", probe_cfg, meter)
    student = cell.student()
    first = "distill-linear-probe.distilled"
    cell.distill(first, "student distilled from the probed teacher", student, teacher, cell.cfg.distill, meter)
    last = cell.finetune("distill-linear-probe", "student distilled from the probed teacher + finetune", student,
                         teacher, meter, chain=(first,))
    rec = cell.record("distill-linear-probe", student, meter, teacher, last)
    head = sum(p.numel() for p in teacher.get_classifier().parameters())
    rec.extra = {"trainable_params": head, "trainable_fraction": head / max(1, count_parameters(teacher))}
    return rec


METHODS: dict[str, Callable[[Cell], MethodRecord]] = {
    "teacher-linear": teacher_linear,
    "teacher-finetune": teacher_finetune,
    "scratch": scratch,
    "pretrained-finetune": pretrained_finetune,
    "task-agnostic": task_agnostic,
    "task-oriented": task_oriented,
    "task-oriented-pretrained": task_oriented_pretrained,
    "pseudo-label": pseudo_label,
    "tdmr": tdmr,
    "distill-linear-probe": distill_linear_probe,
}


def final_stage(method: str) -> str:
    """The stage that holds a method's final model in a run folder."""
    return {"task-oriented": STUDENT, "teacher-finetune": "teacher"}.get(method, method)


def check_methods(names: list[str]) -> None:
    """A ConfigError naming the closest known method for any name that is none."""
    import difflib

    for n in names:
        if n not in METHODS:
            close = difflib.get_close_matches(n, list(METHODS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown method '{n}'.{hint} Methods: {', '.join(METHODS)}")
