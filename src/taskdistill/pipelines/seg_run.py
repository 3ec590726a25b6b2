"""`taskdistill run` with `task: segmentation`, start to end in a run folder:

teacher (head, then finetune) -> teacher logits cached per pixel over the transfer set -> per-pixel
distillation -> student finetune, plus the `scratch` baseline, each checkpointed and evaluated (mIoU,
per-class IoU, pixel accuracy) on the test split. The folder works as for classification (`RunFolder`):
`--resume` loads finished stages, the single-stage verbs run a subset of the same stages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskdistill.config.load import dump_yaml, to_dict
from taskdistill.config.schema import RunConfig
from taskdistill.engine import distributed
from taskdistill.engine.atomic import write_json, write_text
from taskdistill.engine.checkpoint import load_checkpoint, save_checkpoint
from taskdistill.engine.compute import count_parameters
from taskdistill.engine.device import resolve_device, set_threads
from taskdistill.errors import ConfigError, RunFolderError
from taskdistill.pipelines.run_folder import Mode, RunFolder
from taskdistill.pipelines.seg_methods import seg_checkpoint_extra
from taskdistill.pipelines.seg_prepare import PreparedSegData, prepare_seg_data
from taskdistill.pipelines.seg_stages import (
    build_seg_model,
    evaluate_seg_model,
    seg_distill,
    seg_supervised,
    train_seg_teacher,
)
from taskdistill.pipelines.task_oriented import RunResult
from taskdistill.report.markdown import fmt_pct, markdown_table

STAGES = ("teacher", "student_distilled", "student", "scratch")
ROW_TITLES = {
    "teacher": "teacher (finetuned VFM + FPN head)",
    "student_distilled": "student after per-pixel distillation",
    "student": "student after transfer (distill + finetune)",
    "scratch": "student from scratch (labels only)",
}


class _SegRunner:
    """Runs stages in a folder; a stage already finished there is loaded instead of retrained."""

    def __init__(self, folder: RunFolder, cfg: RunConfig, data: PreparedSegData, device: torch.device) -> None:
        self.folder, self.cfg, self.data, self.device = folder, cfg, data, device
        self.log = folder.logger()

    def stage(self, name: str, model: nn.Module, train: Callable[[], dict[str, Any]]) -> None:
        ckpt = self.folder.checkpoint(name)
        if self.folder.stage_done(name):
            self.load_into(model, ckpt)
            self.log.info(f"[{name}] finished earlier; loaded {ckpt}.safetensors")
            return
        self.log.info(f"[{name}] training {model.spec.name} ...")
        start = time.perf_counter()
        info = train()
        info["seconds_total"] = round(time.perf_counter() - start, 2)
        save_checkpoint(ckpt, model, self.data.class_names, stage=name, config=to_dict(self.cfg),
                        extra=seg_checkpoint_extra(self.cfg))
        bs = self.cfg.eval_batch_size
        info["test"] = evaluate_seg_model(model, self.data.test, self.device, bs, f"evaluate {name}")
        if self.data.val is not None:
            info["val"] = evaluate_seg_model(model, self.data.val, self.device, bs, f"val {name}")
        info["params"] = count_parameters(model)
        self.folder.finish_stage(name, info)
        m = info["test"]
        self.log.info(f"[{name}] test mIoU {100 * m['miou']:.2f}%  pixel accuracy {100 * m['pixel_accuracy']:.2f}%  "
                      f"({info['seconds_total']:.0f} s)")

    def load_into(self, model: nn.Module, ckpt: str | Path) -> None:
        loaded, meta = load_checkpoint(ckpt, expect_classes=self.data.class_names)
        if meta["model"]["name"] != model.spec.name:
            raise RunFolderError(f"checkpoint '{ckpt}' holds a {meta['model']['name']}, expected {model.spec.name}")
        model.load_state_dict(loaded.state_dict())

    def require(self, name: str, model: nn.Module, given: str | None, verb: str) -> None:
        if given is not None:
            self.load_into(model, given)
        elif self.folder.stage_done(name):
            self.load_into(model, self.folder.checkpoint(name))
        else:
            raise RunFolderError(f"stage '{name}' has not run in '{self.folder.path}'; run `taskdistill {verb}` with "
                                 f"the same config first, or pass its checkpoint")


def run_segmentation(cfg: RunConfig, mode: Mode = "new", stages: Sequence[str] = STAGES,
                     teacher_checkpoint: str | None = None, student_checkpoint: str | None = None) -> RunResult:
    """Run `stages` of per-pixel task-oriented transfer (all by default) into `<output_dir>/<name>/` and report."""
    if cfg.task != "segmentation":
        raise ConfigError(f"run_segmentation needs task: segmentation, the config says task: {cfg.task}")
    unknown = [b for b in cfg.baselines if b != "scratch"]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {unknown} in baselines; known: ['scratch']")
    set_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    data = prepare_seg_data(cfg)  # bad input fails here, before the folder exists
    k, seg = len(data.class_names), cfg.segmentation
    torch.manual_seed(cfg.seed)
    teacher = build_seg_model(cfg.teacher.model, k, seg).to(device)
    torch.manual_seed(cfg.seed + 1)
    student = build_seg_model(cfg.student.model, k, seg).to(device)
    init_state = {n: t.clone() for n, t in student.state_dict().items()}

    folder = RunFolder(Path(cfg.output_dir) / cfg.name, dump_yaml(cfg), mode)
    runner = _SegRunner(folder, cfg, data, device)
    log = runner.log
    try:
        log.info(f"segmentation run '{cfg.name}' -> {folder.path}  (device {device}, data {data.summary()})")
        cache_dir = Path(cfg.distill.cache_dir or Path(cfg.output_dir) / ".cache")
        if "teacher" in stages:
            runner.stage("teacher", teacher, lambda: train_seg_teacher(teacher, cfg.teacher, data.labeled, cfg.seed,
                                                                       device))
        if "student_distilled" in stages:
            if "teacher" not in stages:
                runner.require("teacher", teacher, teacher_checkpoint, "teacher-finetune")
            runner.stage("student_distilled", student,
                         lambda: seg_distill(student, teacher, data.transfer, cfg.distill, seg, cache_dir, cfg.seed,
                                             device, cfg.eval_batch_size))
        if "student" in stages:
            if "student_distilled" not in stages:
                runner.require("student_distilled", student, student_checkpoint, "distill")
            runner.stage("student", student, lambda: seg_supervised(student, data.labeled, cfg.student.finetune,
                                                                    cfg.seed, device, "student finetune"))
        if "scratch" in stages and "scratch" in cfg.baselines:
            scratch = build_seg_model(cfg.student.model, k, seg).to(device)
            scratch.load_state_dict(init_state)  # the same initialisation as the transferred student
            runner.stage("scratch", scratch, lambda: seg_supervised(scratch, data.labeled, cfg.student.scratch,
                                                                    cfg.seed, device, "student from scratch"))
        result = write_seg_reports(folder, cfg, data)
        done = all(folder.stage_done(s) for s in STAGES if s != "scratch" or "scratch" in cfg.baselines)
        folder.set_status("complete" if done else "partial")
        log.info("\n" + result.report)
        return result
    except BaseException as e:
        folder.set_status("failed", error=f"{type(e).__name__}: {e}")
        log.error(f"run failed: {type(e).__name__}: {e}. Finished stages are kept; rerun with --resume.")
        raise
    finally:
        folder.close_logger()


def seg_report(name: str, data: PreparedSegData, rows: list[dict[str, Any]]) -> str:
    """report.md: one row per model (mIoU, pixel accuracy), then per-class IoU of every model."""
    table = markdown_table(
        ["model", "architecture", "params (M)", "mIoU %", "pixel acc %", "train s"],
        [[r["what"], r["model"], f"{r['params'] / 1e6:.2f}", fmt_pct(r["miou"]), fmt_pct(r["pixel_accuracy"]),
          f"{r['seconds']:.0f}"] for r in rows])
    per_class = markdown_table(["class"] + [r["stage"] for r in rows],
                               [[c] + [fmt_pct(r["per_class_iou"][c]) for r in rows] for c in data.class_names])
    summary = ", ".join(f"{k}: {v}" for k, v in data.summary().items())
    return "\n".join([f"# Segmentation run `{name}`", "", f"Data (images): {summary}.", "", table, "",
                      "Per-class IoU % (`-`: class absent from labels and predictions):", "", per_class, ""])


def write_seg_reports(folder: RunFolder, cfg: RunConfig, data: PreparedSegData) -> RunResult:
    """metrics.json and report.md from every stage finished in the folder."""
    rows = []
    for s in STAGES:
        if not folder.stage_done(s):
            continue
        info = folder.stage_info(s)
        seconds = info["seconds_total"]
        if s == "student" and folder.stage_done("student_distilled"):
            seconds += folder.stage_info("student_distilled")["seconds_total"]
        test = info["test"]
        rows.append({"stage": s, "what": ROW_TITLES[s], "params": info["params"], "seconds": seconds,
                     "model": cfg.teacher.model.name if s == "teacher" else cfg.student.model.name,
                     "miou": test["miou"], "pixel_accuracy": test["pixel_accuracy"],
                     "per_class_iou": test["per_class_iou"]})
    report = seg_report(cfg.name, data, rows)
    metrics = {"task": "segmentation", "data": data.summary(), "rows": rows,
               "stages": {s: folder.stage_info(s) for s in STAGES if folder.stage_done(s)}}
    if distributed.is_main():
        write_json(folder.path / "metrics.json", metrics)
        write_text(folder.path / "report.md", report)
    return RunResult(folder.path, rows, report)
