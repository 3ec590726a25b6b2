"""Task-oriented knowledge transfer, start to end, in a run folder:

teacher finetune -> teacher outputs cached over the transfer set -> distillation -> student finetune,
plus the baselines named in `cfg.baselines` (now: `scratch`), each evaluated on the test split.
Single-stage CLI verbs run a subset of the same stages in the same folder. Under torchrun every rank runs
this code; rank 0 writes the folder, checkpoints and reports (`RunFolder`, `save_checkpoint`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskdistill.config.load import dump_yaml, to_dict
from taskdistill.config.schema import RunConfig
from taskdistill.engine import distributed
from taskdistill.engine.atomic import write_json, write_text
from taskdistill.engine.checkpoint import load_checkpoint, save_checkpoint
from taskdistill.engine.compute import count_parameters, forward_gflops
from taskdistill.engine.device import resolve_device, set_threads
from taskdistill.engine.latency import model_latency
from taskdistill.errors import ConfigError, RunFolderError
from taskdistill.pipelines.preflight import check_output_folders
from taskdistill.pipelines.prepare import PreparedData, prepare_data
from taskdistill.pipelines.run_folder import Mode, RunFolder
from taskdistill.pipelines.stages import build_model, distill, evaluate_model, supervised, train_teacher
from taskdistill.report.markdown import run_report

STAGES = ("teacher", "student_distilled", "student", "scratch")
LATENCY_STAGES = ("teacher", "student")  # the model you have and the one you ship
KNOWN_BASELINES = ("scratch",)
ROW_TITLES = {
    "teacher": "teacher (finetuned VFM)",
    "student_distilled": "student after distillation",
    "student": "student after transfer (distill + finetune)",
    "scratch": "student from scratch (labels only)",
}


@dataclass
class RunResult:
    path: Path
    rows: list[dict[str, Any]]
    report: str


class _Runner:
    """Runs stages in a folder; a stage already finished there is loaded instead of retrained."""

    def __init__(self, folder: RunFolder, cfg: RunConfig, data: PreparedData, device: torch.device) -> None:
        self.folder, self.cfg, self.data, self.device = folder, cfg, data, device
        self.log = folder.logger()

    def stage(self, name: str, model: nn.Module, train: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        ckpt = self.folder.checkpoint(name)
        if self.folder.stage_done(name):
            self.load_into(model, ckpt)
            self.log.info(f"[{name}] finished earlier; loaded {ckpt}.safetensors")
            return self.folder.stage_info(name)
        self.log.info(f"[{name}] training {model.spec.name} ...")
        start = time.perf_counter()
        info = train()
        info["seconds_total"] = round(time.perf_counter() - start, 2)
        save_checkpoint(ckpt, model, self.data.class_names, stage=name, config=to_dict(self.cfg),
                        extra=self.checkpoint_extra(), decode=self.data.policy)
        info["test"] = self.evaluate(model, self.data.test, f"evaluate {name}")
        if self.data.val is not None:
            info["val"] = self.evaluate(model, self.data.val, f"val {name}")
        info["params"] = count_parameters(model)
        if name in LATENCY_STAGES:  # what the student buys: measured where the run ran, on its device
            info["gflops"] = round(forward_gflops(model), 4)
            info["latency"] = model_latency(model).to_dict()
        self.folder.finish_stage(name, info)
        self.log.info(f"[{name}] test {self.summary(info['test'])}  ({info['seconds_total']:.0f} s)")
        return info

    # What differs between task kinds (the segmentation runner overrides these three).
    def checkpoint_extra(self) -> dict[str, Any] | None:
        return None

    def evaluate(self, model: nn.Module, images: Any, desc: str) -> dict[str, Any]:
        return evaluate_model(model, images, self.device, self.cfg.eval_batch_size, desc)

    def summary(self, m: dict[str, Any]) -> str:
        return f"top-1 {100 * m['top1']:.2f}%  macro {100 * m['macro_accuracy']:.2f}%"

    def load_into(self, model: nn.Module, ckpt: str | Path) -> None:
        loaded, meta = load_checkpoint(ckpt, expect_classes=self.data.class_names)
        if meta["model"]["name"] != model.spec.name:
            raise RunFolderError(f"checkpoint '{ckpt}' holds a {meta['model']['name']}, expected {model.spec.name}")
        model.load_state_dict(loaded.state_dict())

    def require(self, name: str, model: nn.Module, given: str | None, verb: str) -> None:
        """Load a prerequisite: the given checkpoint, else the folder's finished stage, else fail with the fix."""
        if given is not None:
            self.load_into(model, given)
        elif self.folder.stage_done(name):
            self.load_into(model, self.folder.checkpoint(name))
        else:
            raise RunFolderError(f"stage '{name}' has not run in '{self.folder.path}'; run `taskdistill {verb}` with "
                                 f"the same config first, or pass its checkpoint")


def run_task_oriented(cfg: RunConfig, mode: Mode = "new", stages: Sequence[str] = STAGES,
                      teacher_checkpoint: str | None = None, student_checkpoint: str | None = None) -> RunResult:
    """Run `stages` of task-oriented transfer (all by default) into `<output_dir>/<name>/` and report."""
    unknown = [b for b in cfg.baselines if b not in KNOWN_BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {unknown} in baselines; known: {list(KNOWN_BASELINES)}")
    set_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    # Everything that can fail on bad input is checked before the run folder is touched.
    data = prepare_data(cfg)
    k = len(data.class_names)
    torch.manual_seed(cfg.seed)
    teacher = build_model(cfg.teacher.model, k).to(device)
    torch.manual_seed(cfg.seed + 1)
    student = build_model(cfg.student.model, k).to(device)
    init_state = {n: t.clone() for n, t in student.state_dict().items()}
    cache_dir = Path(cfg.distill.cache_dir or Path(cfg.output_dir) / ".cache")
    weights = 4 * (count_parameters(teacher) + 3 * count_parameters(student)) + (16 << 20)  # checkpoints, logs
    # float16 teacher outputs, full storage (an upper bound: an existing entry needs nothing)
    cached = len(data.transfer) * cfg.distill.transfer.views * k * 2 if "student_distilled" in stages else 0
    check_output_folders({"output_dir": (Path(cfg.output_dir), weights),
                          "distill.cache_dir": (cache_dir, cached + (1 << 20))})

    folder = RunFolder(Path(cfg.output_dir) / cfg.name, dump_yaml(cfg), mode)
    runner = _Runner(folder, cfg, data, device)
    log = runner.log
    try:
        log.info(f"run '{cfg.name}' -> {folder.path}  (device {device}, data {data.summary()})")
        if "teacher" in stages:
            runner.stage("teacher", teacher,
                         lambda: train_teacher(teacher, cfg.teacher, data.labeled, cfg.seed, device))
        if "student_distilled" in stages:
            if "teacher" not in stages:
                runner.require("teacher", teacher, teacher_checkpoint, "teacher-finetune")
            runner.stage("student_distilled", student,
                         lambda: distill(student, teacher, data.transfer, cfg.distill, cache_dir, cfg.seed, device,
                                         cfg.eval_batch_size))
        if "student" in stages:
            if "student_distilled" not in stages:
                runner.require("student_distilled", student, student_checkpoint, "distill")
            runner.stage("student", student,
                         lambda: supervised(student, data.labeled, cfg.student.finetune, cfg.seed, device,
                                            "student finetune"))
        if "scratch" in stages and "scratch" in cfg.baselines:
            scratch = build_model(cfg.student.model, k).to(device)
            scratch.load_state_dict(init_state)  # the same initialisation as the transferred student
            runner.stage("scratch", scratch,
                         lambda: supervised(scratch, data.labeled, cfg.student.scratch, cfg.seed, device,
                                            "student from scratch"))
        result = write_reports(folder, cfg, data)
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


def write_reports(folder: RunFolder, cfg: RunConfig, data: PreparedData) -> RunResult:
    """metrics.json and report.md from every stage finished in the folder."""
    rows = []
    for s in STAGES:
        if not folder.stage_done(s):
            continue
        info = folder.stage_info(s)
        seconds = info["seconds_total"]
        if s == "student":
            seconds += folder.stage_info("student_distilled")["seconds_total"] if folder.stage_done(
                "student_distilled") else 0.0
        model = cfg.teacher.model.name if s == "teacher" else cfg.student.model.name
        rows.append({"stage": s, "what": ROW_TITLES[s], "model": model, "params": info["params"],
                     "top1": info["test"]["top1"], "macro": info["test"]["macro_accuracy"], "seconds": seconds,
                     "gflops": info.get("gflops"), "latency": info.get("latency")})
    skipped = sorted(set(data.labeled.skipped) | set(data.test.skipped))
    metrics = {"data": data.summary(), "skipped_images": skipped, "rows": rows,
               "stages": {s: folder.stage_info(s) for s in STAGES if folder.stage_done(s)}}
    report = run_report(cfg.name, data.summary(), rows, skipped)
    if distributed.is_main():  # every rank holds the same rows; one writes them
        write_json(folder.path / "metrics.json", metrics)
        write_text(folder.path / "report.md", report)
    return RunResult(folder.path, rows, report)
