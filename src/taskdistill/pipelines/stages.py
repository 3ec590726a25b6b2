"""The stages every method chains: teacher finetune, distillation, student finetune, evaluation.

Each stage takes config sections and prepared data, runs the one loop with its task, and returns the
model and a dict of what it cost (images through the teacher and the student, seconds). Under torchrun
every rank runs the same stage: `fit` syncs gradients through DDP and `evaluate` sums metrics over ranks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskdistill.cache.teacher_outputs import Storage, cached_teacher_outputs
from taskdistill.config.schema import (
    DistillConfig,
    FeatureDistillConfig,
    ModelConfig,
    OptimConfig,
    TeacherConfig,
)
from taskdistill.data.image_set import ImageSet
from taskdistill.data.streaming import ShardStream
from taskdistill.engine.batches import ImageBatches, ViewBatches
from taskdistill.engine.compute import count_parameters
from taskdistill.engine.evaluate import evaluate
from taskdistill.engine.loop import FitResult, Schedule, fit
from taskdistill.models.registry import create_model
from taskdistill.tasks import DistillTask, SupervisedTask
from taskdistill.tasks.feature_distill import FeatureDistillTask, make_projector
from taskdistill.tasks.linear_probe import FeatureBatches, LinearProbeTask, pooled_features
from taskdistill.tasks.online_distill import OnlineDistillTask


def schedule_of(opt: OptimConfig) -> Schedule:
    return Schedule(epochs=opt.epochs, batch_size=opt.batch_size, lr=opt.lr, weight_decay=opt.weight_decay,
                    optimizer=opt.optimizer, warmup_epochs=opt.warmup_epochs, min_steps=opt.min_steps)


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    return create_model(cfg.name, num_classes, pretrained=cfg.pretrained, input_size=cfg.input_size,
                        checkpoint=cfg.checkpoint, drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate)


def _fit_info(result: FitResult) -> dict[str, Any]:
    return {"steps": result.steps, "epochs": result.epochs, "images": result.images_seen,
            "seconds": round(result.seconds, 2), "final_loss": result.last_loss}


def supervised(model: nn.Module, labeled: ImageSet, opt: OptimConfig, seed: int, device: torch.device, desc: str,
               head_only: bool = False) -> dict[str, Any]:
    """Cross-entropy on the labeled images (full model, or only the head when `head_only`).

    A head-only run without augmentation is a linear probe on features computed once.
    """
    if head_only and opt.augment == "none":
        feats = pooled_features(model, labeled.images, device=device)
        probe = LinearProbeTask(model.get_classifier(), opt.label_smoothing)
        result = fit(probe, FeatureBatches(feats, labeled.labels), schedule_of(opt), seed=seed, device=device,
                     desc=desc)
        return {**_fit_info(result), "images": len(labeled), "feature_images": len(labeled)}
    task = SupervisedTask(model, augment=opt.augment, label_smoothing=opt.label_smoothing, head_only=head_only,
                          freeze_bn=opt.freeze_bn, seed=seed)
    info = _fit_info(fit(task, ImageBatches(labeled), schedule_of(opt), seed=seed, device=device, desc=desc))
    for p in model.parameters():
        p.requires_grad_(True)
    return info


def train_teacher(teacher: nn.Module, cfg: TeacherConfig, labeled: ImageSet, seed: int,
                  device: torch.device) -> dict[str, Any]:
    """Stage 1: a task head on the pretrained backbone; linear probe, full finetune, or probe then finetune."""
    teacher.to(device)
    info: dict[str, Any] = {"model": cfg.model.name, "mode": cfg.mode, "params": count_parameters(teacher)}
    if cfg.mode in ("linear-probe", "lp-ft"):
        info["probe"] = supervised(teacher, labeled, cfg.probe, seed, device, "teacher probe", head_only=True)
    if cfg.mode in ("finetune", "lp-ft"):
        info["finetune"] = supervised(teacher, labeled, cfg.train, seed, device, "teacher finetune")
    info["student_images"] = 0
    info["teacher_train_images"] = sum(info[k]["images"] for k in ("probe", "finetune") if k in info)
    teacher.eval()
    return info


def distill(student: nn.Module, teacher: nn.Module, transfer: ImageSet | ShardStream, cfg: DistillConfig,
            cache_dir: str | Path, seed: int, device: torch.device, eval_batch_size: int = 256) -> dict[str, Any]:
    """Stage 2: KL between softened teacher and student predictions over the transfer set.

    In-memory transfer set: the teacher's outputs for every (image, view) come from the on-disk cache
    (computed on a miss). Streamed (`wds:`) transfer set: the teacher runs on the fly on every batch.
    """
    if not isinstance(transfer, ImageSet):
        return _distill_streamed(student, teacher, transfer, cfg, seed, device)
    views = cfg.transfer.views
    outputs, cache_info = cached_teacher_outputs(teacher, transfer, views, view_seed=seed, cache_dir=cache_dir,
                                                 batch_size=eval_batch_size, device=device, storage=storage_of(cfg))
    task = DistillTask(student, outputs, cfg.temperature, view_seed=seed)
    result = fit(task, ViewBatches(transfer, views, seed), schedule_of(cfg.train), seed=seed, device=device,
                 desc="distill")
    return {**_fit_info(result), "cache": cache_info, "teacher_images": cache_info["teacher_images"],
            "transfer_images": len(transfer), "temperature": cfg.temperature, "views": views,
            "soft_labels": cfg.soft_labels, "bytes_per_view": cache_info["bytes_per_view"]}


def _distill_streamed(student: nn.Module, teacher: nn.Module, transfer: ShardStream, cfg: DistillConfig, seed: int,
                      device: torch.device) -> dict[str, Any]:
    """Distillation over a stream of shards, the teacher on the fly (one teacher forward per student image)."""
    teacher.to(device).eval()
    task = OnlineDistillTask(student, teacher, cfg.temperature, view_seed=seed)
    result = fit(task, transfer, schedule_of(cfg.train), seed=seed, device=device, desc="distill (streamed)")
    cache = {"hit": False, "seconds": 0.0, "teacher_images": result.images_seen, "bytes_per_view": 0,
             "mode": "teacher on the fly"}
    return {**_fit_info(result), "cache": cache, "teacher_images": result.images_seen,
            "transfer_images": len(transfer), "temperature": cfg.temperature, "views": cfg.transfer.views,
            "soft_labels": "on the fly", "bytes_per_view": 0, "shards": len(transfer.urls)}


def feature_distill(student: nn.Module, teacher: nn.Module, transfer: ImageSet, cfg: FeatureDistillConfig,
                    views: int, cache_dir: str | Path, seed: int, device: torch.device,
                    eval_batch_size: int = 256) -> dict[str, Any]:
    """Task-agnostic stage: the student's projected pooled features match the frozen teacher's cached ones
    (cosine or contrastive) over the transfer set; no labels."""
    feats, cache = cached_teacher_outputs(teacher, transfer, views, seed, cache_dir, eval_batch_size, device,
                                          kind="features")
    projector = make_projector(student, feats.shape[-1], cfg.projector_hidden).to(device)
    task = FeatureDistillTask(student, projector, feats, cfg.loss, cfg.contrastive_temperature, seed)
    result = fit(task, ViewBatches(transfer, views, seed), schedule_of(cfg.train), seed=seed, device=device,
                 desc="feature distill")
    return {**_fit_info(result), "cache": cache, "teacher_images": cache["teacher_images"]}


def storage_of(cfg: DistillConfig) -> Storage:
    return Storage(cfg.soft_labels, cfg.topk, cfg.temperature)


def evaluate_model(model: nn.Module, test: ImageSet, device: torch.device, batch_size: int, desc: str) -> dict[str, Any]:
    start = time.perf_counter()
    metrics = evaluate(model, test.images, test.labels, test.class_names, batch_size=batch_size, device=device,
                       desc=desc)
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    return metrics
