"""Image classification: one label per image, top-1 and macro accuracy, KL on softened class predictions."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from taskdistill.cache.teacher_outputs import Storage, cached_teacher_outputs
from taskdistill.config.schema import DistillConfig, ModelConfig, OptimConfig, RunConfig
from taskdistill.data.image_set import ImageSet
from taskdistill.data.prepare import PreparedData, load_size_for, load_task_data, prepare_data
from taskdistill.data.streaming import ShardStream
from taskdistill.engine.batches import ImageBatches, ViewBatches
from taskdistill.engine.checkpoint import decode_policy_of
from taskdistill.engine.evaluate import evaluate
from taskdistill.engine.inference import BatchSize
from taskdistill.engine.loop import LoopOptions, fit
from taskdistill.engine.schedule import schedule_of
from taskdistill.errors import ConfigError
from taskdistill.kinds.base import TaskKind, fit_info, inference_batch
from taskdistill.kinds.predictions import PredictOptions, predict_classes
from taskdistill.models.registry import create_model
from taskdistill.results import FitInfo, Metrics, StageCost
from taskdistill.tasks import DistillTask, SupervisedTask
from taskdistill.tasks.feature_distill import FeatureDistillTask, make_projector
from taskdistill.tasks.linear_probe import FeatureBatches, LinearProbeTask, pooled_features
from taskdistill.tasks.online_distill import OnlineDistillTask
from taskdistill.tasks.pseudo_label import PseudoLabelTask


def storage_of(cfg: DistillConfig) -> Storage:
    """How the teacher's outputs are stored in the cache (full, top-k, ...)."""
    return Storage(cfg.soft_labels, cfg.topk, cfg.temperature)


class Classification(TaskKind):
    name: ClassVar[str] = "classification"
    metric: ClassVar[str] = "top1"
    score_columns: ClassVar[tuple[tuple[str, str], ...]] = (("top-1", "top1"), ("macro acc", "macro_accuracy"))
    interval_scores: ClassVar[tuple[str, ...]] = ("top1", "macro_accuracy")
    budget_unit: ClassVar[str] = "labels per class"
    teacher_title: ClassVar[str] = "teacher (finetuned VFM)"
    methods: ClassVar[tuple[str, ...]] = (
        "teacher-linear", "teacher-finetune", "scratch", "pretrained-finetune", "task-agnostic", "task-oriented",
        "task-oriented-pretrained", "pseudo-label", "tdmr", "distill-linear-probe")

    def budget_of(self, cfg: RunConfig) -> int | None:
        return cfg.data.labels_per_class

    def with_budget(self, cfg: RunConfig, budget: int) -> RunConfig:
        data = dataclasses.replace(cfg.data, labels_per_class=budget, max_per_class=None, label_fraction=None)
        return dataclasses.replace(cfg, data=data)

    def prepare(self, cfg: RunConfig) -> PreparedData:
        return prepare_data(cfg)

    def test_set(self, cfg: RunConfig, meta: dict[str, Any]) -> ImageSet:
        # decode test images exactly as the checkpoint's training images were (its recorded policy)
        policy = decode_policy_of(meta, cfg.data.load_size or load_size_for(cfg))
        return load_task_data(cfg.data, policy).test

    def build_model(self, spec: ModelConfig, num_classes: int, cfg: RunConfig) -> nn.Module:
        return create_model(spec.name, num_classes, pretrained=spec.pretrained, input_size=spec.input_size,
                            checkpoint=spec.checkpoint, drop_rate=spec.drop_rate, drop_path_rate=spec.drop_path_rate)

    def supervised(self, model: nn.Module, labeled: ImageSet, opt: OptimConfig, seed: int, device: torch.device,
                   desc: str, head_only: bool = False, options: LoopOptions | None = None) -> FitInfo:
        """Cross-entropy on the labels; a head-only run without augmentation is a linear probe on features
        computed once."""
        if head_only and opt.augment == "none":
            feats = pooled_features(model, labeled.images, device=device,
                                    precision=options.precision if options is not None else "fp32")
            probe = LinearProbeTask(model.get_classifier(), opt.label_smoothing)
            result = fit(probe, FeatureBatches(feats, labeled.labels), schedule_of(opt), seed=seed, device=device,
                         desc=desc, options=options)
            return dataclasses.replace(fit_info(result), images=len(labeled))
        task = SupervisedTask(model, augment=opt.augment, label_smoothing=opt.label_smoothing, head_only=head_only,
                              freeze_bn=opt.freeze_bn, seed=seed)
        return self._fit_labels(task, model, ImageBatches(labeled), opt, seed, device, desc, options)

    def labels_task(self, model: nn.Module, labeled: ImageSet, opt: OptimConfig, seed: int) -> SupervisedTask:
        return SupervisedTask(model, augment=opt.augment, label_smoothing=opt.label_smoothing, freeze_bn=opt.freeze_bn,
                              seed=seed)

    def cached_transfer_task(self, student: nn.Module, teacher: nn.Module, transfer: ImageSet, dcfg: DistillConfig,
                             cfg: RunConfig, cache_dir: Path, seed: int, device: torch.device,
                             hard_labels: bool = False) -> tuple[DistillTask, dict[str, Any]]:
        """KL to the teacher's cached softened outputs (`hard_labels`: cross-entropy to their argmax)."""
        outputs, cache = cached_teacher_outputs(teacher, transfer, dcfg.transfer.views, view_seed=seed,
                                                cache_dir=cache_dir, batch_size=inference_batch(cfg), device=device,
                                                storage=storage_of(dcfg), precision=cfg.execution.precision,
                                                compile=cfg.execution.compile)
        task = (PseudoLabelTask if hard_labels else DistillTask)(student, outputs, dcfg.temperature, view_seed=seed)
        return task, cache

    def distill(self, student: nn.Module, teacher: nn.Module, transfer: ImageSet | ShardStream,
                dcfg: DistillConfig, cfg: RunConfig, cache_dir: Path, seed: int, device: torch.device,
                options: LoopOptions | None = None, hard_labels: bool = False) -> StageCost:
        """KL between softened teacher and student predictions (`hard_labels`: cross-entropy to the teacher's
        argmax). In-memory transfer set: the teacher's outputs for every (image, view) come from the on-disk
        cache (computed on a miss); a streamed (`wds:`) one runs the teacher on the fly on every batch."""
        facts = {"transfer_images": len(transfer), "temperature": dcfg.temperature, "views": dcfg.transfer.views,
                 "targets": "teacher's hard labels" if hard_labels else "teacher's softened outputs"}
        if isinstance(transfer, ShardStream):
            if hard_labels:
                raise ConfigError("pseudo-labels are taken from cached teacher outputs; a streamed wds: transfer set "
                                  "runs the teacher on the fly. Use distill.transfer.source=unlabeled or a manifest")
            teacher.to(device).eval()
            task = OnlineDistillTask(student, teacher, dcfg.temperature, view_seed=seed)
            info = fit_info(fit(task, transfer, schedule_of(dcfg.train), seed=seed, device=device,
                                desc="distill (streamed)", options=options))
            return StageCost(seconds=info.seconds, student_images=info.images, teacher_images=info.images, fit=info,
                             details={**facts, "soft_labels": "on the fly", "shards": len(transfer.urls),
                                      "cache": {"hit": False, "mode": "teacher on the fly"}})
        views = dcfg.transfer.views
        task, cache = self.cached_transfer_task(student, teacher, transfer, dcfg, cfg, cache_dir, seed, device,
                                                hard_labels)
        info = fit_info(fit(task, ViewBatches(transfer, views, seed), schedule_of(dcfg.train), seed=seed,
                            device=device, desc="distill", options=options))
        return StageCost(seconds=info.seconds, student_images=info.images, teacher_images=cache["teacher_images"],
                         cache_seconds=cache["seconds"], fit=info,
                         details={**facts, "soft_labels": dcfg.soft_labels, "bytes_per_view": cache["bytes_per_view"],
                                  "cache": cache})

    def feature_distill(self, student: nn.Module, teacher: nn.Module, transfer: ImageSet | ShardStream,
                        cfg: RunConfig, cache_dir: Path, seed: int, device: torch.device,
                        options: LoopOptions | None = None) -> StageCost:
        """The student's projected pooled features match the frozen teacher's cached ones (cosine or
        contrastive) over the transfer set."""
        fcfg, views = cfg.feature_distill, cfg.distill.transfer.views
        feats, cache = cached_teacher_outputs(teacher, transfer, views, seed, cache_dir, inference_batch(cfg),  # type: ignore[arg-type]
                                              device, kind="features", precision=cfg.execution.precision,
                                              compile=cfg.execution.compile)
        projector = make_projector(student, feats.shape[-1], fcfg.projector_hidden).to(device)
        task = FeatureDistillTask(student, projector, feats, fcfg.loss, fcfg.contrastive_temperature, seed)
        info = fit_info(fit(task, ViewBatches(transfer, views, seed), schedule_of(fcfg.train), seed=seed,  # type: ignore[arg-type]
                            device=device, desc="feature distill", options=options))
        return StageCost(seconds=info.seconds, student_images=info.images, teacher_images=cache["teacher_images"],
                         cache_seconds=cache["seconds"], fit=info, details={"cache": cache})

    def evaluate(self, model: nn.Module, test: ImageSet, device: torch.device, batch_size: BatchSize,
                 desc: str, precision: str = "fp32") -> Metrics:
        start = time.perf_counter()
        m = evaluate(model, test.images, test.labels, test.class_names, batch_size=batch_size, device=device, desc=desc,
                     precision=precision)
        return Metrics(scores={"top1": m["top1"], "macro_accuracy": m["macro_accuracy"]},
                       per_class=m["per_class_accuracy"], per_class_name="accuracy", num_images=m["num_images"],
                       seconds=time.perf_counter() - start, confusion_matrix=m["confusion_matrix"])

    def predict(self, model: nn.Module, meta: dict[str, Any], images: list[str], opts: PredictOptions) -> int:
        return predict_classes(model, meta, images, opts)
