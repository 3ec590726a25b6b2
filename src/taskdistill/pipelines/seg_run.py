"""`taskdistill run` with `task: segmentation`, start to end in a run folder:

teacher (head, then finetune) -> teacher logits cached per pixel over the transfer set -> per-pixel
distillation -> student finetune, plus the `scratch` baseline, each checkpointed and evaluated (mIoU,
per-class IoU, pixel accuracy) on the test split. The folder works as for classification (`RunFolder`):
`--resume` loads finished stages, the single-stage verbs run a subset of the same stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskdistill.config.load import dump_yaml
from taskdistill.config.schema import RunConfig
from taskdistill.engine import distributed
from taskdistill.engine.atomic import write_json, write_text
from taskdistill.engine.device import resolve_device, set_threads
from taskdistill.errors import ConfigError
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
from taskdistill.pipelines.task_oriented import RunResult, _Runner
from taskdistill.report.markdown import fmt_pct, markdown_table

STAGES = ("teacher", "student_distilled", "student", "scratch")
ROW_TITLES = {
    "teacher": "teacher (finetuned VFM + FPN head)",
    "student_distilled": "student after per-pixel distillation",
    "student": "student after transfer (distill + finetune)",
    "scratch": "student from scratch (labels only)",
}


class _SegRunner(_Runner):
    """The classification runner with segmentation's checkpoint fields, metrics and log line."""

    def checkpoint_extra(self) -> dict[str, Any] | None:
        return seg_checkpoint_extra(self.cfg)

    def evaluate(self, model: nn.Module, images: Any, desc: str) -> dict[str, Any]:
        return evaluate_seg_model(model, images, self.device, self.cfg.eval_batch_size, desc)

    def summary(self, m: dict[str, Any]) -> str:
        return f"mIoU {100 * m['miou']:.2f}%  pixel accuracy {100 * m['pixel_accuracy']:.2f}%"


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
