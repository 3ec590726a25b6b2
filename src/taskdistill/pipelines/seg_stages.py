"""The stages segmentation methods chain: teacher finetune, dense distillation, dense feature matching,
student finetune, evaluation. Each runs the one loop (`engine.loop.fit`) with a segmentation task and
returns what it cost (images through teacher and student, seconds)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskdistill.cache.dense_outputs import cached_dense_outputs
from taskdistill.config.schema import (
    DistillConfig,
    FeatureDistillConfig,
    ModelConfig,
    OptimConfig,
    SegmentationConfig,
    TeacherConfig,
)
from taskdistill.data.image_set import ImageSet
from taskdistill.data.segmentation import SegmentationSet
from taskdistill.engine.batches import ViewBatches
from taskdistill.engine.compute import count_parameters
from taskdistill.engine.loop import FitResult, fit
from taskdistill.engine.seg_batches import SegBatches
from taskdistill.engine.seg_metrics import evaluate_segmentation
from taskdistill.errors import ConfigError
from taskdistill.models.registry import create_model
from taskdistill.models.segmentation import SEG_PREFIX
from taskdistill.pipelines.stages import schedule_of
from taskdistill.tasks.dense_distill import DenseDistillTask
from taskdistill.tasks.dense_feature_distill import DenseFeatureDistillTask, DenseProjector
from taskdistill.tasks.seg_supervised import SegSupervisedTask


def seg_model_name(name: str) -> str:
    """A backbone name as the registry's segmentation model name (`seg:<backbone>`)."""
    return name if name.startswith(SEG_PREFIX) else SEG_PREFIX + name


def build_seg_model(cfg: ModelConfig, num_classes: int, seg: SegmentationConfig) -> nn.Module:
    return create_model(seg_model_name(cfg.name), num_classes, pretrained=cfg.pretrained, input_size=cfg.input_size,
                        checkpoint=cfg.checkpoint, head_width=seg.head_width, drop_rate=cfg.drop_rate,
                        drop_path_rate=cfg.drop_path_rate)


def _fit_info(result: FitResult) -> dict[str, Any]:
    return {"steps": result.steps, "epochs": result.epochs, "images": result.images_seen,
            "seconds": round(result.seconds, 2), "final_loss": result.last_loss}


def seg_supervised(model: nn.Module, labeled: SegmentationSet, opt: OptimConfig, seed: int, device: torch.device,
                   desc: str, head_only: bool = False) -> dict[str, Any]:
    """Per-pixel cross-entropy on the labeled images (whole model, or the head on a frozen backbone)."""
    task = SegSupervisedTask(model, augment=opt.augment, head_only=head_only, freeze_bn=opt.freeze_bn,
                             ignore_index=labeled.ignore_index, seed=seed)
    try:
        return _fit_info(fit(task, SegBatches(labeled), schedule_of(opt), seed=seed, device=device, desc=desc))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


def train_seg_teacher(teacher: nn.Module, cfg: TeacherConfig, labeled: SegmentationSet, seed: int,
                      device: torch.device) -> dict[str, Any]:
    """Stage 1: the head on the frozen pretrained backbone (`linear-probe`), the whole model (`finetune`), or both."""
    teacher.to(device)
    info: dict[str, Any] = {"model": teacher.spec.name, "mode": cfg.mode, "params": count_parameters(teacher)}
    if cfg.mode in ("linear-probe", "lp-ft"):
        info["probe"] = seg_supervised(teacher, labeled, cfg.probe, seed, device, "teacher head", head_only=True)
    if cfg.mode in ("finetune", "lp-ft"):
        info["finetune"] = seg_supervised(teacher, labeled, cfg.train, seed, device, "teacher finetune")
    info["teacher_train_images"] = sum(info[k]["images"] for k in ("probe", "finetune") if k in info)
    teacher.eval()
    return info


def seg_distill(student: nn.Module, teacher: nn.Module, transfer: ImageSet, cfg: DistillConfig,
                seg: SegmentationConfig, cache_dir: str | Path, seed: int, device: torch.device,
                eval_batch_size: int = 128) -> dict[str, Any]:
    """Stage 2: per-pixel KL to the teacher's cached logits over the transfer set."""
    views = cfg.transfer.views
    logits, cache = cached_dense_outputs(teacher, transfer, views, seed, cache_dir, eval_batch_size, device,
                                         kind="dense-logits", grid_size=seg.cache_grid)
    task = DenseDistillTask(student, logits, cfg.temperature, view_seed=seed, ignore_index=seg.ignore_index)
    result = fit(task, ViewBatches(transfer, views, seed), schedule_of(cfg.train), seed=seed, device=device,
                 desc="dense distill")
    return {**_fit_info(result), "cache": cache, "teacher_images": cache["teacher_images"],
            "transfer_images": len(transfer), "temperature": cfg.temperature, "views": views,
            "bytes_per_view": cache["bytes_per_view"], "grid": cache["grid"]}


def seg_feature_distill(student: nn.Module, teacher: nn.Module, transfer: ImageSet, cfg: FeatureDistillConfig,
                        views: int, seg: SegmentationConfig, cache_dir: str | Path, seed: int, device: torch.device,
                        eval_batch_size: int = 128) -> dict[str, Any]:
    """Task-agnostic stage: the student's projected dense features match the frozen teacher's backbone level
    `seg.feature_level` (cosine per location) over the transfer set."""
    if cfg.loss != "cosine":
        raise ConfigError(f"segmentation's task-agnostic baseline matches dense features with a cosine loss; "
                          f"feature_distill.loss={cfg.loss!r} is for classification. Set feature_distill.loss=cosine")
    feats, cache = cached_dense_outputs(teacher, transfer, views, seed, cache_dir, eval_batch_size, device,
                                        kind="dense-features", level=seg.feature_level)
    projector = DenseProjector(student.num_features, feats.grid[0], cfg.projector_hidden).to(device)
    task = DenseFeatureDistillTask(student, projector, feats, view_seed=seed)
    result = fit(task, ViewBatches(transfer, views, seed), schedule_of(cfg.train), seed=seed, device=device,
                 desc="dense feature distill")
    return {**_fit_info(result), "cache": cache, "teacher_images": cache["teacher_images"], "grid": cache["grid"]}


def evaluate_seg_model(model: nn.Module, test: SegmentationSet, device: torch.device, batch_size: int,
                       desc: str) -> dict[str, Any]:
    start = time.perf_counter()
    metrics = evaluate_segmentation(model, test, batch_size=batch_size, device=device, desc=desc)
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    return metrics
