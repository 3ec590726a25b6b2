"""Label-budget sweeps: methods x budgets x seeds, resumable cell by cell, with a report at the end.

Layout of a sweep folder: `sweep.yaml` (config + grid), `cells/<method>__b<budget>__s<seed>.json` (one
record per finished cell, written atomically: a finished cell is never recomputed), `teachers/` (one
finetuned teacher per budget and seed, shared by the methods), and the report files, over every finished cell
of the folder (so one process per seed into one folder ends with the whole table).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn
from tqdm.auto import tqdm

from taskdistill import distributed
from taskdistill.atomic import write_json, write_text
from taskdistill.config.load import config_differences, from_stored, override_text, to_dict
from taskdistill.config.schema import RunConfig
from taskdistill.data.prepare import PreparedData
from taskdistill.engine.checkpoint import load_checkpoint, save_checkpoint
from taskdistill.engine.device import resolve_device, set_threads
from taskdistill.engine.loop import LoopOptions, loop_options
from taskdistill.engine.schedule import scaled_config
from taskdistill.errors import ConfigError, RunFolderError
from taskdistill.kinds import TaskKind, kind_of
from taskdistill.kinds.base import inference_batch
from taskdistill.pipelines.cell import Cell, StageOutcome
from taskdistill.pipelines.methods import METHODS, check_methods
from taskdistill.report.sweep_report import write_sweep_report
from taskdistill.results import StageCost


def cell_path(folder: Path, method: str, budget: int, seed: int) -> Path:
    return folder / "cells" / f"{method}__b{budget}__s{seed}.json"


def cell_config(cfg: RunConfig, budget: int, seed: int) -> RunConfig:
    """The config of cell (budget, seed): the label budget in the task kind's unit, and the seed."""
    import dataclasses

    return dataclasses.replace(kind_of(cfg).with_budget(cfg, budget), seed=seed)


@dataclass
class SweepStages:
    """A sweep's `StageStore`: the finetuned teacher of each (budget, seed) is stored under `teacher_dir` and
    shared by every method; the other stages run in memory (a finished cell's record is what is kept)."""

    cfg: RunConfig
    kind: TaskKind
    data: PreparedData
    teacher_dir: Path

    def stage(self, name: str, title: str, model: nn.Module, train: Callable[[], StageCost],
              chain: tuple[str, ...] = ()) -> StageOutcome:
        if name != "teacher":  # evaluated, so the cell records what each stage gave (e.g. stage 3's change)
            cost = train()
            device = next(model.parameters()).device
            return StageOutcome(cost, self.kind.evaluate(model, self.data.test, device, inference_batch(self.cfg),
                                                         f"evaluate {name}", self.cfg.execution.precision))
        stem = self.teacher_dir / f"{self.kind.stem_prefix}b{self.kind.budget_of(self.cfg)}-s{self.cfg.seed}"
        if stem.with_suffix(".json").is_file():
            loaded, meta = load_checkpoint(stem, expect_classes=self.data.class_names)
            model.load_state_dict(loaded.state_dict())
            return StageOutcome(StageCost.from_json(meta["train_info"]))
        start = time.perf_counter()
        cost = train()
        cost.seconds = round(time.perf_counter() - start, 2)
        save_checkpoint(stem, model, self.data.class_names, stage="teacher", config=to_dict(self.cfg),
                        extra={"train_info": cost.to_json(), **self.kind.checkpoint_extra(self.cfg)},
                        decode=self.data.policy)
        return StageOutcome(cost)

    def options(self, name: str) -> LoopOptions:
        """The config's execution settings; no stage files (a sweep keeps finished cells, not stages)."""
        return loop_options(self.cfg, name, None)


def run_sweep(cfg: RunConfig, methods: Sequence[str], budgets: Sequence[int], seeds: Sequence[int],
              folder: str | Path, force: bool = False) -> list[dict[str, Any]]:
    """Run every missing cell of the grid into `folder`, then write the report of every finished cell in the
    folder; returns the grid's records."""
    kind = kind_of(cfg)
    check_methods(list(methods))
    kind.check_methods(list(methods))
    if not budgets or not seeds or not methods:
        raise ConfigError("a sweep needs at least one method, one budget and one seed")
    folder = Path(folder)
    spec = yaml.safe_dump({"grid": {"methods": list(methods), "budgets": list(budgets), "seeds": list(seeds)},
                           "config": to_dict(cfg)}, sort_keys=False)
    stored = folder / "sweep.yaml"
    if stored.is_file() and not force:
        old = yaml.safe_load(stored.read_text())
        # Read the stored config through today's schema, so a field added since (with its default) does not
        # orphan a finished sweep; a changed value still does.
        differs = config_differences(to_dict(from_stored(RunConfig, old["config"])), to_dict(cfg))
        if differs:
            shown = "; ".join(f"{key}: {a!r} there, {b!r} now" for key, a, b in differs[:5])
            more = f" (and {len(differs) - 5} more)" if len(differs) > 5 else ""
            sets = " ".join(f"--set {override_text(key, a)}" for key, a, _ in differs[:5])
            raise RunFolderError(f"sweep folder '{folder}' was made with another config ({shown}{more}); continue it "
                                 f"with the same config (e.g. {sets}), start over with --force, or pass another --out")
    if force:
        import shutil

        distributed.on_main(lambda: shutil.rmtree(folder, ignore_errors=True))  # a collective: every rank calls it
    set_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    cache_dir = Path(cfg.distill.cache_dir or folder / ".cache")
    main = distributed.is_main()
    grid = grid_of(methods, budgets, seeds)

    def start() -> list[tuple[int, int, str]]:
        write_text(stored, spec)
        return [(b, s, m) for b, s, m in grid if not cell_path(folder, m, b, s).is_file()]

    todo = distributed.on_main(start)  # under torchrun every rank runs the same cells; rank 0 writes
    if main:
        print(f"sweep '{folder}': {len(grid)} cells, {len(grid) - len(todo)} done, {len(todo)} to run")
    bar = tqdm(total=len(todo), desc="sweep", unit="cell", disable=None if main else True)
    prepared: dict[tuple[int, int], PreparedData] = {}
    for budget, seed, method in todo:
        ccfg = cell_config(cfg, budget, seed)
        if (budget, seed) not in prepared:
            prepared.clear()  # one (budget, seed) data split in memory at a time
            prepared[(budget, seed)] = kind.prepare(ccfg)
        data = prepared[(budget, seed)]
        cell = Cell(scaled_config(ccfg), kind, data, device, cache_dir, SweepStages(ccfg, kind, data, folder / "teachers"))
        record = METHODS[method](cell).to_json()
        distributed.on_main(lambda rec=record, b=budget, s=seed, m=method: write_json(cell_path(folder, m, b, s), rec))
        bar.update(1)
        if main:
            title = kind.score_columns[0][0]
            print(f"  {method:<26} budget {budget:<4} seed {seed}: {title} {100 * record[kind.metric]:.2f}%  "
                  f"({record['seconds']:.0f} s)")
    bar.close()

    def finish() -> list[dict[str, Any]]:
        # the report covers the folder, not just this call's grid: one process per seed (or budget) into one
        # folder ends with a report of every finished cell (they all ran with this config)
        shown = {c: json.loads(cell_path(folder, c[2], c[0], c[1]).read_text()) for c in finished_cells(folder)}
        write_sweep_report(list(shown.values()), folder, title=f"Sweep {cfg.name}: {cfg.data.dataset}, student "
                                                  f"{cfg.student.model.name}, teacher {cfg.teacher.model.name}",
                           metric=kind.metric, budget_unit=kind.budget_unit)
        return [shown[cell] for cell in grid]

    return distributed.on_main(finish)


def finished_cells(folder: Path) -> list[tuple[int, int, str]]:
    """Every finished (budget, seed, method) cell in a sweep folder: methods in registry order, then budget and
    seed ascending (a file name this module did not write is skipped)."""
    found = []
    for path in (folder / "cells").glob("*__b*__s*.json"):
        method, budget, seed = path.stem.rsplit("__", 2)
        if method in METHODS and budget[1:].isdigit() and seed[1:].isdigit():
            found.append((int(budget[1:]), int(seed[1:]), method))
    order = list(METHODS)
    return sorted(found, key=lambda c: (order.index(c[2]), c[0], c[1]))


def grid_of(methods: Sequence[str], budgets: Sequence[int], seeds: Sequence[int]) -> list[tuple[int, int, str]]:
    """Every (budget, seed, method) cell, in run order."""
    return [(b, s, m) for b in budgets for s in seeds for m in methods]
