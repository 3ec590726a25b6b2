"""One cell of the comparison grid (a config with its budget and seed set): its data, its models, its stages.

Both `taskdistill run` and `taskdistill sweep` run methods (pipelines/methods.py) on a `Cell`; they
differ only in where the cell's stages live (`StageStore`): a run keeps every stage in its run folder
(checkpointed, evaluated, reloaded on --resume), a sweep keeps the finetuned teacher of each (budget,
seed) for every method and runs the rest in memory. Seeds follow one rule, so both give the same figures:
the teacher is built after `torch.manual_seed(seed * 1000)`, every student after `seed * 1000 + 1`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from taskdistill.config.schema import DistillConfig, ModelConfig, RunConfig, TeacherConfig
from taskdistill.data.prepare import PreparedData
from taskdistill.engine.compute import count_parameters, forward_gflops
from taskdistill.engine.loop import LoopOptions
from taskdistill.errors import ConfigError
from taskdistill.kinds import TaskKind
from taskdistill.kinds.base import inference_batch
from taskdistill.models.ensemble import EnsembleTeacher
from taskdistill.results import MethodRecord, Metrics, ModelCost, StageCost


@dataclass
class StageOutcome:
    """A finished stage: what it cost, and its test metrics where the store evaluated it."""

    cost: StageCost
    test: Metrics | None = None


class StageStore(Protocol):
    """Where a cell's stages run and what is kept of them."""

    def stage(self, name: str, title: str, model: nn.Module, train: Callable[[], StageCost],
              chain: tuple[str, ...] = ()) -> StageOutcome:
        """Run `train` (which trains `model` in place) as stage `name`, or load it where it finished before.
        `chain`: the earlier stages of the same student (their seconds add to its report row)."""
        ...

    def options(self, name: str) -> LoopOptions:
        """How the loop runs stage `name` (precision, compilation, mid-stage checkpoints, scalar logs)."""
        ...


class Meter:
    """Accumulates a method's cost: images through teacher and student, seconds per stage."""

    def __init__(self) -> None:
        self.teacher_images = 0
        self.student_images = 0
        self.stage_seconds: dict[str, float] = {}
        self.stage_scores: dict[str, dict[str, float]] = {}

    def add(self, stage: str, seconds: float, teacher_images: int = 0, student_images: int = 0) -> None:
        self.stage_seconds[stage] = round(self.stage_seconds.get(stage, 0.0) + seconds, 2)
        self.teacher_images += teacher_images
        self.student_images += student_images

    def scored(self, name: str, outcome: StageOutcome) -> StageOutcome:
        """Keep stage `name`'s test scores where its store evaluated it; returns `outcome`."""
        if outcome.test is not None:
            self.stage_scores[name] = dict(outcome.test.scores)
        return outcome

    def add_training(self, stage: str, cost: StageCost) -> None:
        """A distillation-like stage: teacher outputs (cached or on the fly), then the student's training."""
        if cost.cache_seconds or cost.teacher_images:
            self.add("teacher_outputs", cost.cache_seconds, teacher_images=cost.teacher_images)
        self.add(stage, cost.seconds, student_images=cost.student_images)


def model_cost(model: nn.Module) -> ModelCost:
    return ModelCost(model.spec.name, count_parameters(model), round(forward_gflops(model), 4))


@dataclass
class Cell:
    """A grid cell: the config (budget and seed set), its task kind and data, the device, the teacher-output
    cache folder, and the store its stages run in."""

    cfg: RunConfig
    kind: TaskKind
    data: PreparedData
    device: torch.device
    cache_dir: Path
    stages: StageStore

    @property
    def budget(self) -> int | None:
        return self.kind.budget_of(self.cfg)

    @property
    def seed(self) -> int:
        return self.cfg.seed

    def seeded(self, offset: int) -> None:
        torch.manual_seed(self.cfg.seed * 1000 + offset)

    def _build(self, spec_pretrained: bool | None, teacher: bool, num_classes: int | None = None,
               model: ModelConfig | None = None) -> nn.Module:
        """A model of the section `model` (default `teacher.model` or `student.model`)."""
        spec = model if model is not None else self.cfg.teacher.model if teacher else self.cfg.student.model
        if spec_pretrained is not None:
            spec = dataclasses.replace(spec, pretrained=spec_pretrained)
        k = len(self.data.class_names) if num_classes is None else num_classes
        return self.kind.build_model(spec, k, self.cfg).to(self.device)

    def student(self, pretrained: bool = False) -> nn.Module:
        """A fresh student; every method's student starts from the same random init (head included)."""
        self.seeded(1)
        return self._build(pretrained, teacher=False)

    def teacher(self, num_classes: int | None = None) -> nn.Module:
        """The pretrained teacher with a fresh head (of `num_classes`, default the task's). With `teacher.ensemble`:
        an `EnsembleTeacher` of `teacher.model` then each member, built in that order after the one seeding, that
        averages their outputs softened at `distill.temperature` (models/ensemble.py)."""
        self.seeded(0)
        if not self.cfg.teacher.ensemble:
            return self._build(None, teacher=True, num_classes=num_classes)
        if num_classes is not None:  # tdmr: its own source classifier (the config rule stops `run`; this a sweep)
            raise ConfigError("tdmr reprograms one frozen teacher and does not take teacher.ensemble: drop tdmr from "
                              "the methods, or set teacher.ensemble=[]")
        members = [self._build(None, teacher=True, model=m) for m in (self.cfg.teacher.model, *self.cfg.teacher.ensemble)]
        return EnsembleTeacher(members, self.cfg.distill.temperature).to(self.device)

    # ---- stages -------------------------------------------------------------------------------------------
    def train_teacher(self, name: str, title: str, cfg: TeacherConfig, meter: Meter) -> nn.Module:
        teacher = self.teacher()
        out = self.stages.stage(name, title, teacher, lambda: self.kind.train_teacher(
            teacher, cfg, self.data.labeled, self.seed, self.device, self.stages.options(name)))
        meter.add("teacher", out.cost.seconds, teacher_images=out.cost.teacher_images)
        return teacher

    def finetuned_teacher(self, meter: Meter) -> nn.Module:
        """Stage `teacher`: the teacher trained on the labels as `teacher.mode` says, shared by the methods."""
        return self.train_teacher("teacher", self.kind.teacher_title, self.cfg.teacher, meter)

    def supervised(self, name: str, title: str, model: nn.Module, opt_name: str, meter: Meter,
                   chain: tuple[str, ...] = ()) -> StageOutcome:
        """Supervised training on the labels with the student schedule `opt_name` (finetune, scratch,
        pretrained_finetune)."""
        opt = getattr(self.cfg.student, opt_name)

        def train() -> StageCost:
            start = time.perf_counter()
            info = self.kind.supervised(model, self.data.labeled, opt, self.seed, self.device, f"student {opt_name}",
                                        options=self.stages.options(name))
            return StageCost(seconds=round(time.perf_counter() - start, 2), student_images=info.images, fit=info)

        return self._labels_stage(name, title, model, train, chain, meter, opt_name)

    def finetune(self, name: str, title: str, student: nn.Module, teacher: nn.Module, meter: Meter,
                 chain: tuple[str, ...] = (), hard_labels: bool = False) -> StageOutcome:
        """Stage 3: the distilled student on the labels (`student.finetune`). With `distill.finetune_anchor` > 0
        every step also distils `teacher`'s cached outputs on transfer images (`hard_labels`: its decisions,
        at `distill.pseudo_label_anchor_lr`)."""
        dcfg = self.cfg.distill
        if dcfg.finetune_anchor == 0:
            return self.supervised(name, title, student, "finetune", meter, chain)
        opt = self.cfg.student.finetune
        lr = dcfg.finetune_anchor_lr
        if hard_labels and dcfg.pseudo_label_anchor_lr is not None:
            lr = dcfg.pseudo_label_anchor_lr
        if lr is not None:
            opt = dataclasses.replace(opt, lr=lr)

        def train() -> StageCost:
            start = time.perf_counter()
            info = self.kind.anchored_finetune(student, teacher, self.data.labeled, self.data.transfer, opt, dcfg,
                                               self.cfg, self.cache_dir, self.seed, self.device,
                                               "student finetune (anchored)", self.stages.options(name), hard_labels)
            return StageCost(seconds=round(time.perf_counter() - start, 2), student_images=info.images, fit=info,
                             details={"finetune_anchor": dcfg.finetune_anchor, "lr": opt.lr,
                                      "transfer_images_per_step": dcfg.finetune_transfer_batch})

        return self._labels_stage(name, title, student, train, chain, meter, "finetune")

    def _labels_stage(self, name: str, title: str, model: nn.Module, train: Callable[[], StageCost],
                      chain: tuple[str, ...], meter: Meter, part: str) -> StageOutcome:
        """Run a stage that trains on the labels; its seconds count as `part` of the method's cost."""
        out = meter.scored(name, self.stages.stage(name, title, model, train, chain))
        meter.add(part, out.cost.fit.seconds if out.cost.fit else out.cost.seconds, student_images=out.cost.student_images)
        return out

    def distill(self, name: str, title: str, student: nn.Module, teacher: nn.Module, dcfg: DistillConfig,
                meter: Meter, hard_labels: bool = False) -> StageOutcome:
        out = meter.scored(name, self.stages.stage(name, title, student, lambda: self.kind.distill(
            student, teacher, self.data.transfer, dcfg, self.cfg, self.cache_dir, self.seed, self.device,
            self.stages.options(name), hard_labels=hard_labels)))
        meter.add_training("distill", out.cost)
        return out

    def feature_distill(self, name: str, title: str, student: nn.Module, teacher: nn.Module,
                        meter: Meter) -> StageOutcome:
        out = self.stages.stage(name, title, student, lambda: self.kind.feature_distill(
            student, teacher, self.data.transfer, self.cfg, self.cache_dir, self.seed, self.device,
            self.stages.options(name)))
        meter.add_training("distill", out.cost)
        return out

    def record(self, method: str, model: nn.Module, meter: Meter, teacher: nn.Module | None,
               last: StageOutcome | None = None) -> MethodRecord:
        """The method's record: its final model's test metrics (the store's, or measured now) and its cost."""
        test = last.test if last is not None and last.test is not None else self.kind.evaluate(
            model, self.data.test, self.device, inference_batch(self.cfg), f"evaluate {method}",
            self.cfg.execution.precision)
        return MethodRecord(method=method, task=self.kind.name, budget=self.budget, budget_unit=self.kind.budget_unit,
                            seed=self.seed, metrics=test, stage_seconds=dict(meter.stage_seconds),
                            teacher_images=meter.teacher_images, student_images=meter.student_images,
                            student=model_cost(model), teacher=model_cost(teacher) if teacher is not None else None,
                            stage_scores=dict(meter.stage_scores))
