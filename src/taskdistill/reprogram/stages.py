"""The TDMR stages, each on the one training loop: reprogram the frozen teacher on the labels, cache its
proxy-space outputs over the transfer set, distil them progressively into the student.

Each stage returns what it cost (teacher forwards, teacher forward+backward passes, student images,
seconds), so the method that chains them can account for its compute. Finetuning the student on the
labels afterwards is the shared `pipelines.stages.supervised` stage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskdistill.cache.teacher_outputs import Storage, TeacherOutputs, cached_teacher_outputs
from taskdistill.config.schema import TDMRConfig
from taskdistill.data.image_set import ImageSet
from taskdistill.engine.batches import ImageBatches, ViewBatches
from taskdistill.engine.loop import fit
from taskdistill.engine.schedule import schedule_of
from taskdistill.reprogram.build import RemappingTask, build_reprogrammed
from taskdistill.reprogram.progressive import ProxyDistillTask, ProxyStudent
from taskdistill.reprogram.reprogrammed import ReprogrammedTeacher, ReprogramTask, predict_outputs
from taskdistill.reprogram.schedule import WeightSchedule, planned_steps


def weight_schedule(cfg: TDMRConfig) -> WeightSchedule:
    return WeightSchedule(cfg.schedule, cfg.ramp_fraction, cfg.ramp_shape, cfg.joint_weight)


def reprogram_teacher(teacher: nn.Module, labeled: ImageSet, cfg: TDMRConfig, seed: int, device: torch.device,
                      batch_size: int = 256) -> tuple[ReprogrammedTeacher, dict[str, Any]]:
    """Stage 1: build the prompt + label map around the frozen `teacher` and train them on `labeled`.

    Info: `train_images` (teacher forward+backward passes), `label_mapping_images` (forwards for FLM /
    ILM maps), `steps`, `remaps`, `trainable_params`, `teacher_params`, `trainable_fraction`, `mapping`.
    With nothing to train (prompt "none" and a fixed map) no step runs.
    """
    start = time.perf_counter()
    model, info = build_reprogrammed(teacher, cfg, labeled, batch_size, device)
    opt = cfg.reprogram
    if cfg.label_mapping == "ilm":
        task: ReprogramTask = RemappingTask(model, labeled.images, labeled.labels, cfg.ilm_period, opt.augment,
                                            opt.label_smoothing, seed, batch_size)
    else:
        task = ReprogramTask(model, opt.augment, opt.label_smoothing, seed)
    steps = images = 0
    final_loss = float("nan")
    if model.num_trainable > 0:
        result = fit(task, ImageBatches(labeled), schedule_of(opt), seed=seed, device=device, desc="reprogram")
        steps, images, final_loss = result.steps, result.images_seen, result.last_loss
    model.eval()
    if isinstance(task, RemappingTask):
        info["label_mapping_images"] += task.mapping_images
        info["remaps"] = task.remaps
        info["mapping"] = model.head.mapping.tolist()
    info.update(steps=steps, train_images=images, final_loss=final_loss, trainable_params=model.num_trainable,
                teacher_params=model.num_teacher_parameters, trainable_fraction=model.trainable_fraction(),
                seconds=round(time.perf_counter() - start, 2))
    info["teacher_images"] = info["train_images"] + info["label_mapping_images"]
    return model, info


def proxy_outputs(model: ReprogrammedTeacher, transfer: ImageSet, cfg: TDMRConfig, views: int, seed: int,
                  cache_dir: str | Path, batch_size: int, device: torch.device
                  ) -> tuple[TeacherOutputs | None, TeacherOutputs | None, dict[str, Any]]:
    """Stage 2a: the reprogrammed teacher's source logits (top-k probabilities at the proxy temperature, or
    float16 logits) and target logits (float16) for every (transfer image, view), through the shared cache.

    Only the outputs the weight schedule ever uses are built. Returns (source, target, info) with
    `teacher_images` (forwards run in this call; 0 on cache hits) and the per-kind cache infos.
    """
    schedule = weight_schedule(cfg)
    info: dict[str, Any] = {"teacher_images": 0, "seconds": 0.0}
    source = target = None
    wanted = [("source_logits", Storage(cfg.proxy_soft_labels, cfg.proxy_topk, cfg.proxy_temperature),
               schedule.uses_proxy),
              ("target_logits", Storage("full"), schedule.uses_task)]
    for kind, storage, needed in wanted:
        if not needed:
            continue
        outputs, cache = cached_teacher_outputs(model, transfer, views, seed, cache_dir, batch_size, device,
                                                kind=kind, storage=storage)
        info[kind] = cache
        info["teacher_images"] += cache["teacher_images"]
        info["seconds"] += cache["seconds"]
        if kind == "source_logits":
            source = outputs
        else:
            target = outputs
    info["seconds"] = round(info["seconds"], 2)
    return source, target, info


def progressive_distill(student: nn.Module, source: TeacherOutputs | None, target: TeacherOutputs | None,
                        transfer: ImageSet, cfg: TDMRConfig, views: int, seed: int,
                        device: torch.device) -> dict[str, Any]:
    """Stage 2b: train `student` (in place) with a temporary proxy head on the cached proxy outputs.

    The proxy head lives only inside this call: afterwards `student` is the plain model it was, with
    trained weights. Info: `steps`, `images` (student images), `seconds`, `final_loss`, `proxy_head_params`.
    """
    num_source = source.shape[2] if source is not None else None
    wrapper = ProxyStudent(student, num_source)
    schedule = schedule_of(cfg.distill)
    batches = ViewBatches(transfer, views, seed)
    total = planned_steps(len(batches), schedule)
    task = ProxyDistillTask(wrapper, source, target, weight_schedule(cfg), total, cfg.proxy_temperature,
                            cfg.task_temperature, view_seed=seed)
    result = fit(task, batches, schedule, seed=seed, device=device, desc="proxy distill")
    if result.steps != total:
        raise RuntimeError(f"proxy distillation ran {result.steps} steps, its weight schedule planned {total}")
    return {"steps": result.steps, "images": result.images_seen, "seconds": round(result.seconds, 2),
            "final_loss": result.last_loss, "final_weight": task.schedule.at(max(0, total - 1), total),
            "proxy_head_params": sum(p.numel() for p in wrapper.proxy_head.parameters())
            if wrapper.proxy_head is not None else 0,
            "schedule": cfg.schedule, "temperatures": [cfg.proxy_temperature, cfg.task_temperature]}


def teacher_accuracy(model: ReprogrammedTeacher, test: ImageSet, batch_size: int, device: torch.device) -> float:
    """Top-1 of the reprogrammed teacher's target logits on `test` (plain views)."""
    logits = predict_outputs(model, test.images, "target_logits", batch_size, device)
    return float((logits.argmax(1) == test.labels).float().mean())
