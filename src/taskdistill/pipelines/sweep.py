"""Label-budget sweeps: methods x budgets x seeds, resumable cell by cell, with a report at the end.

Layout of a sweep folder: `sweep.yaml` (config + grid), `cells/<method>__b<budget>__s<seed>.json` (one
record per finished cell, written atomically: a finished cell is never recomputed), `teachers/` (one
finetuned teacher per budget and seed, shared by the methods), and the report files.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from taskdistill.config.load import from_dict, to_dict
from taskdistill.config.schema import RunConfig
from taskdistill.engine import distributed
from taskdistill.engine.atomic import write_json, write_text
from taskdistill.engine.device import resolve_device, set_threads
from taskdistill.errors import ConfigError, RunFolderError
from taskdistill.pipelines.methods import METHODS, Cell, check_methods
from taskdistill.pipelines.prepare import prepare_data
from taskdistill.pipelines.seg_methods import (
    SEG_BUDGET_UNIT,
    SEG_METHODS,
    SEG_METRIC,
    SegCell,
    check_seg_methods,
)
from taskdistill.pipelines.seg_prepare import prepare_seg_data
from taskdistill.report.sweep_report import write_sweep_report


def cell_path(folder: Path, method: str, budget: int, seed: int) -> Path:
    return folder / "cells" / f"{method}__b{budget}__s{seed}.json"


def cell_config(cfg: RunConfig, budget: int, seed: int) -> RunConfig:
    if cfg.task == "segmentation":  # budgets count labeled images
        seg = dataclasses.replace(cfg.segmentation, labeled_images=budget)
        return dataclasses.replace(cfg, seed=seed, segmentation=seg)
    data = dataclasses.replace(cfg.data, labels_per_class=budget, max_per_class=None, label_fraction=None)
    return dataclasses.replace(cfg, seed=seed, data=data)


def run_sweep(cfg: RunConfig, methods: Sequence[str], budgets: Sequence[int], seeds: Sequence[int],
              folder: str | Path, force: bool = False) -> list[dict[str, Any]]:
    """Run every missing cell of the grid into `folder`, then write the report; returns all records."""
    seg = cfg.task == "segmentation"  # segmentation methods (pipelines/seg_methods.py); budgets = labeled images
    (check_seg_methods if seg else check_methods)(list(methods))
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
        if to_dict(from_dict(RunConfig, old["config"])) != to_dict(cfg):
            raise RunFolderError(f"sweep folder '{folder}' was made with another config; use the same config to "
                                 f"continue it, --force to start over, or another --out folder")
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
    prepared: dict[tuple[int, int], Any] = {}
    for budget, seed, method in todo:
        ccfg = cell_config(cfg, budget, seed)
        if (budget, seed) not in prepared:
            prepared.clear()  # one (budget, seed) data split in memory at a time
            prepared[(budget, seed)] = prepare_seg_data(ccfg) if seg else prepare_data(ccfg)
        if seg:
            record = SEG_METHODS[method](SegCell(ccfg, prepared[(budget, seed)], device, cache_dir, folder / "teachers"))
        else:
            record = METHODS[method](Cell(ccfg, prepared[(budget, seed)], device, cache_dir, folder / "teachers"))
        distributed.on_main(lambda rec=record, b=budget, s=seed, m=method: write_json(cell_path(folder, m, b, s), rec))
        bar.update(1)
        if main:
            shown = f"mIoU {100 * record['miou']:.2f}%" if seg else f"top-1 {100 * record['top1']:.2f}%"
            print(f"  {method:<26} budget {budget:<4} seed {seed}: {shown}  ({record['seconds']:.0f} s)")
    bar.close()

    def finish() -> list[dict[str, Any]]:
        records = [json.loads(cell_path(folder, m, b, s).read_text()) for b, s, m in grid]
        kind = dict(metric=SEG_METRIC, budget_unit=SEG_BUDGET_UNIT) if seg else {}
        write_sweep_report(records, folder, title=f"Sweep {cfg.name}: {cfg.data.dataset}, student "
                                                  f"{cfg.student.model.name}, teacher {cfg.teacher.model.name}", **kind)
        return records

    return distributed.on_main(finish)


def grid_of(methods: Sequence[str], budgets: Sequence[int], seeds: Sequence[int]) -> list[tuple[int, int, str]]:
    """Every (budget, seed, method) cell, in run order."""
    return [(b, s, m) for b in budgets for s in seeds for m in methods]
