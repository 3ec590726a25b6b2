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
from taskdistill.engine.batches import AnchoredBatches, ImageBatches, ViewBatches
from taskdistill.engine.compute import count_parameters
from taskdistill.engine.inference import BatchSize
from taskdistill.engine.loop import FitResult, LoopOptions, fit
from taskdistill.engine.schedule import schedule_of
from taskdistill.errors import ConfigError
from taskdistill.kinds.predictions import PredictOptions
from taskdistill.models.ensemble import EnsembleTeacher
from taskdistill.results import FitInfo, Metrics, StageCost
from taskdistill.tasks.anchored_finetune import AnchoredFinetuneTask, TransferTask
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

    def _fit_labels(self, task: SupervisedTask | AnchoredFinetuneTask, model: nn.Module,
                    source: ImageBatches | AnchoredBatches, opt: OptimConfig, seed: int, device: torch.device,
                    desc: str, options: LoopOptions | None) -> FitInfo:
        """Run a task that trains on the labels over `source` (the labeled set's batches, or a source built on
        them); every weight trains again afterwards (a head-only task froze the backbone)."""
        try:
            return fit_info(fit(task, source, schedule_of(opt), seed=seed, device=device, desc=desc, options=options))
        finally:
            for p in model.parameters():
                p.requires_grad_(True)

    @abstractmethod
    def labels_task(self, model: nn.Module, labeled: LabeledSet, opt: OptimConfig, seed: int) -> SupervisedTask:
        """The supervised task that trains the whole `model` on the labels with schedule `opt`'s options."""

    @abstractmethod
    def cached_transfer_task(self, student: nn.Module, teacher: nn.Module, transfer: ImageSet, dcfg: DistillConfig,
                             cfg: RunConfig, cache_dir: Path, seed: int, device: torch.device,
                             hard_labels: bool = False) -> tuple[TransferTask, dict[str, Any]]:
        """Stage 2's task on `transfer` (an in-memory set) over the teacher's cached outputs (computed on a
        miss), and the cache's facts (`teacher_images`, `seconds`, `bytes_per_view`, ...)."""

    def anchored_finetune(self, student: nn.Module, teacher: nn.Module, labeled: LabeledSet,
                          transfer: ImageSet | ShardStream, opt: OptimConfig, dcfg: DistillConfig, cfg: RunConfig,
                          cache_dir: Path, seed: int, device: torch.device, desc: str,
                          options: LoopOptions | None = None, hard_labels: bool = False) -> FitInfo:
        """Stage 3 that keeps distilling: the labels' loss plus `dcfg.finetune_anchor` x stage 2's loss on
        `dcfg.finetune_transfer_batch` transfer images per step (`tasks.anchored_finetune`). Images counted:
        labeled and transfer rows."""
        if not isinstance(transfer, ImageSet):
            raise ConfigError("distill.finetune_anchor > 0 keeps distilling over cached teacher outputs; a streamed "
                              "wds: transfer set has none. Set distill.finetune_anchor=0 or use an in-memory source")
        distill, _ = self.cached_transfer_task(student, teacher, transfer, dcfg, cfg, cache_dir, seed, device,
                                               hard_labels)
        task = AnchoredFinetuneTask(self.labels_task(student, labeled, opt, seed), distill, dcfg.finetune_anchor)
        source = AnchoredBatches(ImageBatches(labeled), ViewBatches(transfer, dcfg.transfer.views, seed),
                                 dcfg.finetune_transfer_batch, seed)
        info = self._fit_labels(task, student, source, opt, seed, device, desc, options)
        return dataclasses.replace(info, images=info.images + info.steps * dcfg.finetune_transfer_batch)

    def train_teacher(self, teacher: nn.Module, cfg: TeacherConfig, labeled: LabeledSet, seed: int,
                      device: torch.device, options: LoopOptions | None = None) -> StageCost:
        """Stage 1: a task head on the pretrained backbone; linear probe, full finetune, or probe then finetune.

        An ensemble teacher (`teacher.ensemble`, models/ensemble.py): each member in turn, as `cfg.mode` says, with
        its parts' files (mid-stage checkpoints, scalar logs) in `<stage>/member<i>/<part>/`; the cost counts every
        member's teacher images, and `details["members"]` holds each member's parts."""
        start = time.perf_counter()
        teacher.to(device)

        def train(model: nn.Module, opts: LoopOptions | None, who: str) -> dict[str, FitInfo]:
            parts: dict[str, FitInfo] = {}
            if cfg.mode in ("linear-probe", "lp-ft"):
                parts["probe"] = self.supervised(model, labeled, cfg.probe, seed, device, f"{who} probe",
                                                 head_only=True, options=part_options(opts, "probe"))
            if cfg.mode in ("finetune", "lp-ft"):
                parts["finetune"] = self.supervised(model, labeled, cfg.train, seed, device, f"{who} finetune",
                                                    options=part_options(opts, "finetune"))
            return parts

        details: dict[str, Any] = {"model": teacher.spec.name, "mode": cfg.mode, "params": count_parameters(teacher)}
        if isinstance(teacher, EnsembleTeacher):
            n, members = len(teacher.members), []
            for i, member in enumerate(teacher.members):
                parts = train(member, part_options(options, f"member{i}"), f"teacher {i + 1}/{n}")
                members.append({"model": member.spec.name, "params": count_parameters(member),
                                **{k: vars(v) for k, v in parts.items()}})
            details["members"] = members
            images = sum(p["images"] for m in members for k, p in m.items() if k in ("probe", "finetune"))
        else:
            parts = train(teacher, options, "teacher")
            details.update({k: vars(v) for k, v in parts.items()})
            images = sum(p.images for p in parts.values())
        teacher.eval()
        return StageCost(seconds=round(time.perf_counter() - start, 2), teacher_images=images, details=details)

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
