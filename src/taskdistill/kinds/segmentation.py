"""Semantic segmentation: a class per pixel, mIoU, per-pixel KL on the teacher's cached softened logits.

Models are `seg:<backbone>` FPN models; budgets count labeled images; datasets are the built-in
`fashion-composite` or a `seg-folder` (images + masks). Segmentation sets load into memory; their images
are squashed with their masks (the decode policy is not recorded yet).
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from taskdistill.cache.dense_outputs import cached_dense_outputs
from taskdistill.config.schema import DistillConfig, ModelConfig, OptimConfig, RunConfig
from taskdistill.data.composite import CompositeSpec, load_fashion_composite
from taskdistill.data.image_set import ImageSet
from taskdistill.data.prepare import (
    PreparedData,
    build_transfer_set,
    decode_policy_for,
    load_size_for,
    store_options,
)
from taskdistill.data.segmentation import SegmentationSet, SegTaskData, few_shot_images, load_seg_folders
from taskdistill.data.sources import TaskData
from taskdistill.data.streaming import ShardStream
from taskdistill.engine.batches import ImageBatches, ViewBatches
from taskdistill.engine.inference import BatchSize
from taskdistill.engine.loop import LoopOptions, fit
from taskdistill.engine.schedule import schedule_of
from taskdistill.engine.seg_metrics import evaluate_segmentation
from taskdistill.errors import ConfigError, DataError
from taskdistill.kinds.base import TaskKind, fit_info, inference_batch
from taskdistill.kinds.predictions import PredictOptions, predict_masks
from taskdistill.models.registry import create_model
from taskdistill.models.segmentation import SEG_PREFIX
from taskdistill.results import FitInfo, Metrics, StageCost
from taskdistill.tasks.dense_distill import DenseDistillTask
from taskdistill.tasks.dense_feature_distill import DenseFeatureDistillTask, DenseProjector
from taskdistill.tasks.supervised import SupervisedTask

SEG_DATASETS = ("fashion-composite", "seg-folder")


def seg_model_name(name: str) -> str:
    """A backbone name as the registry's segmentation model name (`seg:<backbone>`)."""
    return name if name.startswith(SEG_PREFIX) else SEG_PREFIX + name


def load_seg_task_data(cfg: RunConfig) -> SegTaskData:
    """The dataset named by `data.dataset`: the built-in composite (cached under the distill cache folder) or a
    folder of images and masks."""
    d = cfg.data
    if d.dataset == "fashion-composite":
        cache = Path(cfg.distill.cache_dir or Path(cfg.output_dir) / ".cache")
        spec = CompositeSpec(**dataclasses.asdict(cfg.segmentation.composite))
        return load_fashion_composite(spec, d.root, cache_dir=cache)
    if d.dataset == "seg-folder":
        return load_seg_folders(d.root, d.test_root, load_size_for(cfg), cfg.segmentation.ignore_index)
    close = difflib.get_close_matches(d.dataset, SEG_DATASETS, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise DataError(f"dataset '{d.dataset}' is not a segmentation dataset.{hint} With task: segmentation use "
                    f"data.dataset={' or '.join(SEG_DATASETS)}")


def prepare_seg_data(cfg: RunConfig, task: SegTaskData | None = None) -> PreparedData:
    """The few-shot split by image count, the transfer set (images only) and the test split (`task`: preloaded)."""
    task = task if task is not None else load_seg_task_data(cfg)
    s, d = cfg.segmentation, cfg.data
    split_seed = cfg.seed if d.split_seed is None else d.split_seed
    split = few_shot_images(len(task.train), s.labeled_images, split_seed, s.val_images)
    pool = TaskData(train=task.train.unlabeled(), test=task.test.unlabeled())
    transfer = build_transfer_set(pool, split, cfg.distill.transfer, split_seed,
                                  decode_policy_for(d, load_size_for(cfg)), d.on_bad_image, store=store_options(d))
    return PreparedData(labeled=task.train.subset(split.labeled),
                        val=task.train.subset(split.val) if len(split.val) else None,
                        transfer=transfer, test=task.test, split=split)


class Segmentation(TaskKind):
    name: ClassVar[str] = "segmentation"
    metric: ClassVar[str] = "miou"
    score_columns: ClassVar[tuple[tuple[str, str], ...]] = (("mIoU", "miou"), ("pixel accuracy", "pixel_accuracy"))
    budget_unit: ClassVar[str] = "labeled images"
    stem_prefix: ClassVar[str] = "seg-"
    teacher_title: ClassVar[str] = "teacher (finetuned VFM + FPN head)"
    methods: ClassVar[tuple[str, ...]] = ("teacher-linear", "teacher-finetune", "scratch", "pretrained-finetune",
                                          "task-agnostic", "task-oriented", "task-oriented-pretrained")

    def budget_of(self, cfg: RunConfig) -> int:
        return cfg.segmentation.labeled_images

    def with_budget(self, cfg: RunConfig, budget: int) -> RunConfig:
        return dataclasses.replace(cfg, segmentation=dataclasses.replace(cfg.segmentation, labeled_images=budget))

    def prepare(self, cfg: RunConfig) -> PreparedData:
        if cfg.teacher.ensemble:  # checked before any data is read or folder written
            raise ConfigError("teacher.ensemble is supported for task: classification; set teacher.ensemble=[] "
                              "(one teacher: teacher.model) for task: segmentation")
        return prepare_seg_data(cfg)

    def test_set(self, cfg: RunConfig, meta: dict[str, Any]) -> SegmentationSet:
        return load_seg_task_data(cfg).test

    def build_model(self, spec: ModelConfig, num_classes: int, cfg: RunConfig) -> nn.Module:
        return create_model(seg_model_name(spec.name), num_classes, pretrained=spec.pretrained,
                            input_size=spec.input_size, checkpoint=spec.checkpoint,
                            head_width=cfg.segmentation.head_width, drop_rate=spec.drop_rate,
                            drop_path_rate=spec.drop_path_rate)

    def checkpoint_extra(self, cfg: RunConfig) -> dict[str, Any]:
        return {"task": self.name, "ignore_index": cfg.segmentation.ignore_index}

    def supervised(self, model: nn.Module, labeled: SegmentationSet, opt: OptimConfig, seed: int,
                   device: torch.device, desc: str, head_only: bool = False,
                   options: LoopOptions | None = None) -> FitInfo:
        """Per-pixel cross-entropy on the labeled masks (whole model, or the head on a frozen backbone)."""
        task = SupervisedTask(model, augment=opt.augment, head_only=head_only, freeze_bn=opt.freeze_bn, seed=seed,
                              per_pixel=True, ignore_index=labeled.ignore_index)
        return self._fit_labels(task, model, ImageBatches(labeled), opt, seed, device, desc, options)

    def labels_task(self, model: nn.Module, labeled: SegmentationSet, opt: OptimConfig, seed: int) -> SupervisedTask:
        return SupervisedTask(model, augment=opt.augment, freeze_bn=opt.freeze_bn, seed=seed, per_pixel=True,
                              ignore_index=labeled.ignore_index)

    def cached_transfer_task(self, student: nn.Module, teacher: nn.Module, transfer: ImageSet, dcfg: DistillConfig,
                             cfg: RunConfig, cache_dir: Path, seed: int, device: torch.device,
                             hard_labels: bool = False) -> tuple[DenseDistillTask, dict[str, Any]]:
        """Per-pixel KL to the teacher's cached logits (stored at `segmentation.cache_grid`)."""
        if hard_labels:
            raise ConfigError("per-pixel pseudo-labels are not built; segmentation distils softened logits")
        seg = cfg.segmentation
        logits, cache = cached_dense_outputs(teacher, transfer, dcfg.transfer.views, seed, cache_dir,
                                             inference_batch(cfg), device, kind="dense-logits", grid_size=seg.cache_grid,
                                             precision=cfg.execution.precision)
        return DenseDistillTask(student, logits, dcfg.temperature, view_seed=seed, ignore_index=seg.ignore_index), cache

    def _transfer(self, transfer: ImageSet | ShardStream) -> ImageSet:
        if not isinstance(transfer, ImageSet):
            raise ConfigError("segmentation distils over an image-set transfer set (cached dense outputs); a "
                              "streamed wds: source is for classification")
        return transfer

    def distill(self, student: nn.Module, teacher: nn.Module, transfer: ImageSet | ShardStream,
                dcfg: DistillConfig, cfg: RunConfig, cache_dir: Path, seed: int, device: torch.device,
                options: LoopOptions | None = None, hard_labels: bool = False) -> StageCost:
        """Per-pixel KL to the teacher's cached logits over the transfer set."""
        transfer, views = self._transfer(transfer), dcfg.transfer.views
        task, cache = self.cached_transfer_task(student, teacher, transfer, dcfg, cfg, cache_dir, seed, device,
                                                hard_labels)
        info = fit_info(fit(task, ViewBatches(transfer, views, seed), schedule_of(dcfg.train), seed=seed,
                            device=device, desc="dense distill", options=options))
        return StageCost(seconds=info.seconds, student_images=info.images, teacher_images=cache["teacher_images"],
                         cache_seconds=cache["seconds"], fit=info,
                         details={"transfer_images": len(transfer), "temperature": dcfg.temperature, "views": views,
                                  "bytes_per_view": cache["bytes_per_view"], "grid": cache["grid"], "cache": cache})

    def feature_distill(self, student: nn.Module, teacher: nn.Module, transfer: ImageSet | ShardStream,
                        cfg: RunConfig, cache_dir: Path, seed: int, device: torch.device,
                        options: LoopOptions | None = None) -> StageCost:
        """The student's projected dense features match the frozen teacher's backbone level
        `segmentation.feature_level` (cosine per location) over the transfer set."""
        fcfg, seg, views = cfg.feature_distill, cfg.segmentation, cfg.distill.transfer.views
        if fcfg.loss != "cosine":
            raise ConfigError(f"segmentation's task-agnostic baseline matches dense features with a cosine loss; "
                              f"feature_distill.loss={fcfg.loss!r} is for classification. Set feature_distill.loss=cosine")
        transfer = self._transfer(transfer)
        feats, cache = cached_dense_outputs(teacher, transfer, views, seed, cache_dir, inference_batch(cfg), device,
                                            kind="dense-features", level=seg.feature_level,
                                            precision=cfg.execution.precision)
        projector = DenseProjector(student.num_features, feats.grid[0], fcfg.projector_hidden).to(device)
        task = DenseFeatureDistillTask(student, projector, feats, view_seed=seed)
        info = fit_info(fit(task, ViewBatches(transfer, views, seed), schedule_of(fcfg.train), seed=seed,
                            device=device, desc="dense feature distill", options=options))
        return StageCost(seconds=info.seconds, student_images=info.images, teacher_images=cache["teacher_images"],
                         cache_seconds=cache["seconds"], fit=info, details={"grid": cache["grid"], "cache": cache})

    def evaluate(self, model: nn.Module, test: SegmentationSet, device: torch.device, batch_size: BatchSize,
                 desc: str, precision: str = "fp32") -> Metrics:
        start = time.perf_counter()
        m = evaluate_segmentation(model, test, batch_size=batch_size, device=device, desc=desc, precision=precision)
        return Metrics(scores={k: m[k] for k in ("miou", "pixel_accuracy", "mean_accuracy")},
                       per_class=m["per_class_iou"], per_class_name="iou", num_images=m["num_images"],
                       seconds=time.perf_counter() - start, confusion_matrix=m["confusion_matrix"])

    def predict(self, model: nn.Module, meta: dict[str, Any], images: list[str], opts: PredictOptions) -> int:
        return predict_masks(model, meta, images, opts)
