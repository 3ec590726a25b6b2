"""The task kind: everything that differs between classification and segmentation, in one object per kind.

Pipelines, the sweep and the CLI get a `TaskKind` from `kind_of(cfg)` (or `kind_of_checkpoint(meta)`)
and call it: how labeled and unlabeled data load, the model and its head, supervised training,
distillation and feature matching, metrics, and the report's score columns. Nothing outside `kinds/`
tests the kind by name. A new kind (detection) is a new subclass registered in `kinds/__init__.py`.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from taskdistill.config.schema import DistillConfig, ModelConfig, OptimConfig, RunConfig, TeacherConfig
from taskdistill.data.image_set import ImageSet
from taskdistill.data.prepare import LabeledSet, PreparedData
from taskdistill.data.streaming import ShardStream
from taskdistill.engine.batches import ImageBatches
from taskdistill.engine.compute import count_parameters
from taskdistill.engine.inference import BatchSize
from taskdistill.engine.loop import FitResult, LoopOptions, fit
from taskdistill.engine.schedule import schedule_of
from taskdistill.errors import ConfigError
from taskdistill.kinds.predictions import PredictOptions
from taskdistill.results import FitInfo, Metrics, StageCost
from taskdistill.tasks.supervised import SupervisedTask


def part_options(options: LoopOptions | None, part: str) -> LoopOptions | None:
    """The options of one part of a stage (the teacher's probe, then its finetune): its files in `<dir>/<part>/`."""
    if options is None:
        return None

    def sub(path: Path | None) -> Path | None:
        return None if path is None else path.parent / part / path.name

    return dataclasses.replace(options, checkpoint_path=sub(options.checkpoint_path), log_path=sub(options.log_path),
                               tensorboard_dir=sub(options.tensorboard_dir))


def inference_batch(cfg: RunConfig) -> BatchSize:
    """The batch of teacher-output caching and evaluation: `eval_batch_size`, or the largest that fits
    (`execution.auto_batch`, on CUDA)."""
    return "auto" if cfg.execution.auto_batch else cfg.eval_batch_size


def fit_info(result: FitResult) -> FitInfo:
    return FitInfo(steps=result.steps, epochs=result.epochs, images=result.images_seen,
                   seconds=round(result.seconds, 2), final_loss=result.last_loss)


class TaskKind(ABC):
    """One task kind (classification, segmentation). Stateless: one shared instance per kind."""

    name: ClassVar[str]  # the config's `task`
    metric: ClassVar[str]  # the headline score (sweep tables, plots)
    score_columns: ClassVar[tuple[tuple[str, str], ...]]  # (report header, score key), headline first
    interval_scores: ClassVar[tuple[str, ...]] = ()  # scores that are proportions over test images (95% CIs)
    budget_unit: ClassVar[str]  # what a sweep budget counts
    stem_prefix: ClassVar[str] = ""  # of a sweep's stored teachers (`teachers/<prefix>b<budget>-s<seed>`)
    teacher_title: ClassVar[str]  # the teacher's row title in a run report
    methods: ClassVar[tuple[str, ...]]  # the methods (pipelines/methods.py) this kind supports

    # ---- config -------------------------------------------------------------------------------------------
    @abstractmethod
    def budget_of(self, cfg: RunConfig) -> int | None:
        """The config's label budget in `budget_unit` (None: the config sets no count, e.g. a label fraction)."""

    @abstractmethod
    def with_budget(self, cfg: RunConfig, budget: int) -> RunConfig:
        """`cfg` with its label budget set to `budget` (a sweep cell's config)."""

    def check_methods(self, names: Sequence[str]) -> None:
        """A ConfigError naming the closest method this kind supports, for any name it does not."""
        for n in names:
            if n not in self.methods:
                close = difflib.get_close_matches(n, list(self.methods), n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ConfigError(f"method '{n}' is not available for task: {self.name}.{hint} "
                                  f"{self.name.capitalize()} methods: {', '.join(self.methods)}")

    # ---- data ---------------------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, cfg: RunConfig) -> PreparedData:
        """Every set a run of `cfg` uses, validated before any run folder is written."""

    @abstractmethod
    def test_set(self, cfg: RunConfig, meta: dict[str, Any]) -> LabeledSet:
        """The test split of `cfg`'s dataset, decoded as the checkpoint `meta` was trained (evaluate verb)."""

    # ---- models -------------------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self, spec: ModelConfig, num_classes: int, cfg: RunConfig) -> nn.Module:
        """A teacher or student of this kind (random head) from its model section."""

    def checkpoint_extra(self, cfg: RunConfig) -> dict[str, Any]:
        """What a checkpoint records besides the weights, read back by evaluate / predict / export."""
        return {"task": self.name}

    # ---- training -----------------------------------------------------------------------------------------
    @abstractmethod
    def supervised(self, model: nn.Module, labeled: LabeledSet, opt: OptimConfig, seed: int, device: torch.device,
                   desc: str, head_only: bool = False, options: LoopOptions | None = None) -> FitInfo:
        """Train `model` on the labels (the whole model, or only its head on a frozen backbone)."""

    def _fit_labels(self, task: SupervisedTask, model: nn.Module, labeled: LabeledSet, opt: OptimConfig, seed: int,
                    device: torch.device, desc: str, options: LoopOptions | None) -> FitInfo:
        """Run a supervised task over the labeled set's batches; every weight trains again afterwards (a
        head-only task froze the backbone)."""
        try:
            return fit_info(fit(task, ImageBatches(labeled), schedule_of(opt), seed=seed, device=device, desc=desc,
                                options=options))
        finally:
            for p in model.parameters():
                p.requires_grad_(True)

    def train_teacher(self, teacher: nn.Module, cfg: TeacherConfig, labeled: LabeledSet, seed: int,
                      device: torch.device, options: LoopOptions | None = None) -> StageCost:
        """Stage 1: a task head on the pretrained backbone; linear probe, full finetune, or probe then finetune."""
        start = time.perf_counter()
        teacher.to(device)
        parts: dict[str, FitInfo] = {}
        if cfg.mode in ("linear-probe", "lp-ft"):
            parts["probe"] = self.supervised(teacher, labeled, cfg.probe, seed, device, "teacher probe",
                                             head_only=True, options=part_options(options, "probe"))
        if cfg.mode in ("finetune", "lp-ft"):
            parts["finetune"] = self.supervised(teacher, labeled, cfg.train, seed, device, "teacher finetune",
                                                options=part_options(options, "finetune"))
        teacher.eval()
        details: dict[str, Any] = {"model": teacher.spec.name, "mode": cfg.mode, "params": count_parameters(teacher)}
        details.update({k: vars(v) for k, v in parts.items()})
        return StageCost(seconds=round(time.perf_counter() - start, 2),
                         teacher_images=sum(p.images for p in parts.values()), details=details)

    @abstractmethod
    def distill(self, student: nn.Module, teacher: nn.Module, transfer: ImageSet | ShardStream,
                dcfg: DistillConfig, cfg: RunConfig, cache_dir: Path, seed: int, device: torch.device,
                options: LoopOptions | None = None, hard_labels: bool = False) -> StageCost:
        """Stage 2: the student learns the teacher's softened task outputs over the transfer set (`hard_labels`:
        its decisions, with cross-entropy: the pseudo-label reference)."""

    @abstractmethod
    def feature_distill(self, student: nn.Module, teacher: nn.Module, transfer: ImageSet | ShardStream,
                        cfg: RunConfig, cache_dir: Path, seed: int, device: torch.device,
                        options: LoopOptions | None = None) -> StageCost:
        """Task-agnostic stage: the student's projected features match the frozen teacher's (no labels)."""

    # ---- metrics ------------------------------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, model: nn.Module, test: LabeledSet, device: torch.device, batch_size: BatchSize,
                 desc: str, precision: str = "fp32") -> Metrics:
        """The model's metrics on a labeled set."""

    @abstractmethod
    def predict(self, model: nn.Module, meta: dict[str, Any], images: list[str], opts: PredictOptions) -> int:
        """Predictions of a checkpoint's `model` for image files, folders and globs, written as `opts` says;
        returns the process exit code."""

    def summary(self, m: Metrics) -> str:
        """One log line of the metrics: every report score in %."""
        return "  ".join(f"{title} {100 * m[key]:.2f}%" for title, key in self.score_columns)
