"""`taskdistill run`: the methods of `run.methods` as one grid cell, every stage kept in a run folder.

The cell is the sweep's (pipelines/cell.py, same recipes, seeds and cache keys), so a run and a sweep of
one budget and one seed give the same figures. Here each stage is checkpointed, evaluated on the test
split (and validation split) and recorded in `run.json` when it finishes; `--resume` loads finished
stages instead of retraining them. The single-stage verbs run some stages of `task-oriented` (`only`),
loading their prerequisites from the folder or from given checkpoints. Under torchrun every rank runs
this code; rank 0 writes the folder, checkpoints and reports.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskdistill import distributed
from taskdistill.atomic import write_json, write_text
from taskdistill.config.load import dump_yaml, to_dict
from taskdistill.config.schema import RunConfig
from taskdistill.data.prepare import PreparedData
from taskdistill.engine.checkpoint import load_checkpoint, save_checkpoint
from taskdistill.engine.compute import count_parameters, forward_gflops
from taskdistill.engine.device import resolve_device, set_threads
from taskdistill.engine.latency import model_latency
from taskdistill.engine.loop import LoopOptions, loop_options
from taskdistill.engine.schedule import scaled_config
from taskdistill.errors import RunFolderError
from taskdistill.kinds import TaskKind, kind_of
from taskdistill.kinds.base import inference_batch
from taskdistill.pipelines.cell import Cell, StageOutcome
from taskdistill.pipelines.methods import METHODS, check_methods, final_stage
from taskdistill.pipelines.preflight import check_output_folders
from taskdistill.pipelines.run_folder import Mode, RunFolder
from taskdistill.report.markdown import run_report
from taskdistill.results import METRICS_SCHEMA, MethodRecord, Metrics, StageCost

LATENCY_STAGES = ("teacher", "student")  # the model you have and the one you ship
VERB_OF_STAGE = {"teacher": "teacher-finetune", "student_distilled": "distill", "student": "finetune"}


@dataclass
class RunResult:
    path: Path
    rows: list[dict[str, Any]]
    records: list[MethodRecord]
    report: str


class _StopRecipe(Exception):
    """A single-stage verb reached a stage after the ones it runs."""


@dataclass
class FolderStages:
    """The run's `StageStore`: every stage checkpointed and evaluated in the run folder, loaded on resume.

    `only`: the stages this invocation may train (a single-stage verb). A stage before them that has not
    finished and is not `given` as a checkpoint is passed over, but training right after it is an error that
    names the verb to run first; a stage after them ends the recipe.
    """

    folder: RunFolder
    cfg: RunConfig
    kind: TaskKind
    data: PreparedData
    device: torch.device
    only: frozenset[str] | None = None
    given: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)  # prerequisites passed over (not finished, not given)
    previous: str | None = None  # the stage asked for last

    def __post_init__(self) -> None:
        self.log = self.folder.logger()

    def stage(self, name: str, title: str, model: nn.Module, train: Callable[[], StageCost],
              chain: tuple[str, ...] = ()) -> StageOutcome:
        previous, self.previous = self.previous, name
        if name in self.given:
            self._load_into(model, self.given[name])
            self.log.info(f"[{name}] loaded the given checkpoint {self.given[name]}")
            return StageOutcome(StageCost(seconds=0.0))
        if self.folder.stage_done(name):
            self._load_into(model, self.folder.checkpoint(name))
            self.log.info(f"[{name}] finished earlier; loaded {self.folder.checkpoint(name)}.safetensors")
            info = self.folder.stage_info(name)
            return StageOutcome(StageCost.from_json(info["cost"]), Metrics.from_json(info["test"]))
        if self.only is not None and name not in self.only:
            if self.ran:
                raise _StopRecipe(name)
            self.missing.add(name)  # needed only if the next stage trains on it
            return StageOutcome(StageCost(seconds=0.0))
        if previous in self.missing:
            verb = VERB_OF_STAGE.get(previous, "run")
            raise RunFolderError(f"stage '{previous}' has not run in '{self.folder.path}'; run `taskdistill {verb}` "
                                 f"with the same config first, or pass its checkpoint")
        self.log.info(f"[{name}] training {model.spec.name} ...")
        start = time.perf_counter()
        cost = train()
        seconds = round(time.perf_counter() - start, 2)
        save_checkpoint(self.folder.checkpoint(name), model, self.data.class_names, stage=name,
                        config=to_dict(self.cfg), extra=self.kind.checkpoint_extra(self.cfg), decode=self.data.policy)
        bs, precision = inference_batch(self.cfg), self.cfg.execution.precision
        test = self.kind.evaluate(model, self.data.test, self.device, bs, f"evaluate {name}", precision)
        info: dict[str, Any] = {"title": title, "model": model.spec.name, "chain": list(chain),
                                "seconds_total": seconds, "cost": cost.to_json(), "test": test.to_json(),
                                "params": count_parameters(model)}
        if self.data.val is not None:
            info["val"] = self.kind.evaluate(model, self.data.val, self.device, bs, f"val {name}", precision).to_json()
        if name in LATENCY_STAGES:  # what the student buys: measured where the run ran, on its device
            info["gflops"] = round(forward_gflops(model), 4)
            info["latency"] = model_latency(model).to_dict()
        self.folder.finish_stage(name, info)
        self.ran.append(name)
        self.log.info(f"[{name}] test {self.kind.summary(test)}  ({seconds:.0f} s)")
        return StageOutcome(cost, test)

    def options(self, name: str) -> LoopOptions:
        """Stage files in `<run>/stages/<name>/`: the scalar log (CSV, TensorBoard), the mid-stage checkpoint
        that `--resume` continues from."""
        return loop_options(self.cfg, name, self.folder.path / "stages" / name)

    def _load_into(self, model: nn.Module, ckpt: str | Path) -> None:
        loaded, meta = load_checkpoint(ckpt, expect_classes=self.data.class_names)
        if meta["model"]["name"] != model.spec.name:
            raise RunFolderError(f"checkpoint '{ckpt}' holds a {meta['model']['name']}, expected {model.spec.name}")
        model.load_state_dict(loaded.state_dict())


def _check_room(cfg: RunConfig, kind: TaskKind, data: PreparedData, methods: Sequence[str], cache_dir: Path) -> None:
    """Fail before the folder is touched when the output or cache folder cannot take the run."""
    k = len(data.class_names)
    try:
        with torch.device("meta"):  # shapes only: no weights loaded, no memory used
            sizes = [count_parameters(kind.build_model(dataclasses.replace(m, pretrained=False, checkpoint=None), k,
                                                       cfg)) for m in (cfg.teacher.model, cfg.student.model)]
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # a hub model that cannot live on "meta"
        sizes = [0, 0]  # the check still covers logs and the cache
    weights = 4 * (sizes[0] + 3 * sizes[1]) * max(1, len(methods)) + (16 << 20)  # checkpoints, logs
    distills = any(m not in ("scratch", "pretrained-finetune", "teacher-finetune", "teacher-linear") for m in methods)
    # float16 teacher outputs, full storage (an upper bound: an existing entry needs nothing)
    cached = len(data.transfer) * cfg.distill.transfer.views * k * 2 if distills else 0
    check_output_folders({"output_dir": (Path(cfg.output_dir), weights),
                          "distill.cache_dir": (cache_dir, cached + (1 << 20))})


def run(cfg: RunConfig, mode: Mode = "new", methods: Sequence[str] | None = None,
        only: Sequence[str] | None = None, given: dict[str, str] | None = None) -> RunResult:
    """Run `methods` (default `cfg.run.methods`) as one cell into `<output_dir>/<name>/` and report.

    `only`: train only these stages (the single-stage verbs), with `given` checkpoints by stage name.
    """
    kind = kind_of(cfg)
    methods = list(cfg.run.methods if methods is None else methods)
    check_methods(methods)
    kind.check_methods(methods)
    set_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    data = kind.prepare(cfg)  # everything that can fail on bad input is checked before the folder is touched
    cache_dir = Path(cfg.distill.cache_dir or Path(cfg.output_dir) / ".cache")
    _check_room(cfg, kind, data, methods, cache_dir)
    folder = RunFolder(Path(cfg.output_dir) / cfg.name, dump_yaml(cfg), mode)
    stages = FolderStages(folder, cfg, kind, data, device, frozenset(only) if only is not None else None,
                          dict(given or {}))
    cell = Cell(scaled_config(cfg), kind, data, device, cache_dir, stages)
    log = stages.log
    try:
        log.info(f"{kind.name} run '{cfg.name}' -> {folder.path}  (device {device}, methods {', '.join(methods)}, "
                 f"data {data.summary()})")
        records = []
        for method in methods:
            try:
                records.append(METHODS[method](cell))
            except _StopRecipe:
                pass
        result = write_reports(folder, cfg, kind, data, records)
        done = all(folder.stage_done(final_stage(m)) for m in cfg.run.methods)
        folder.set_status("complete" if done else "partial")
        log.info("\n" + result.report)
        return result
    except BaseException as e:
        folder.set_status("failed", error=f"{type(e).__name__}: {e}")
        log.error(f"run failed: {type(e).__name__}: {e}. Finished stages are kept; rerun with --resume.")
        raise
    finally:
        folder.close_logger()


def write_reports(folder: RunFolder, cfg: RunConfig, kind: TaskKind, data: PreparedData,
                  records: list[MethodRecord]) -> RunResult:
    """metrics.json and report.md from every stage finished in the folder, plus the methods' records."""
    stages = folder.finished_stages()
    rows = []
    for s in stages:
        info = folder.stage_info(s)
        seconds = info["seconds_total"] + sum(folder.stage_info(c)["seconds_total"] for c in info.get("chain", [])
                                              if folder.stage_done(c))
        rows.append({"stage": s, "what": info["title"], "model": info["model"], "params": info["params"],
                     "test": info["test"], "seconds": round(seconds, 2), "gflops": info.get("gflops"),
                     "latency": info.get("latency")})
    metrics = {"schema": METRICS_SCHEMA, "task": kind.name, "name": cfg.name, "data": data.summary(),
               "skipped_images": data.skipped, "rows": rows, "methods": [r.to_json() for r in records],
               "stages": {s: folder.stage_info(s) for s in stages}}
    report = run_report(cfg.name, kind.name, data.summary(), rows, data.skipped, kind.score_columns,
                        data.class_names, kind.interval_scores)
    if distributed.is_main():  # every rank holds the same rows; one writes them
        write_json(folder.path / "metrics.json", metrics)
        write_text(folder.path / "report.md", report)
    return RunResult(folder.path, rows, records, report)
