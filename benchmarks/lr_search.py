"""Each sweep method's own small learning-rate search, scored on a validation split (never the test set).

Run: .venv/bin/python benchmarks/lr_search.py [--config fashion-mnist-sweep] [--budget 10]
     .venv/bin/python benchmarks/lr_search.py --config seg-composite --budget 10 --val 50 --out benchmarks/results/seg_lr_search

The search uses its own labeled split (seed 100, not one of the sweep's seeds): `budget` training labels
plus `--val` validation labels per class (segmentation: `budget` training images plus `--val` validation
images), drawn from the training images; the validation images stay out of the transfer set. The score
is top-1 (segmentation: mIoU) on the validation images. Every (method, learning rate) pair is one cell, stored as it
finishes (`cells/*.json`), so a killed search continues. Writes `summary.md` / `summary.json` with the
best rate per method; copy those into the sweep config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from taskdistill.atomic import write_json, write_text
from taskdistill.cli.common import shipped_configs
from taskdistill.config import RunConfig, load_config
from taskdistill.engine.device import resolve_device, set_threads
from taskdistill.kinds import kind_of
from taskdistill.pipelines.cell import Cell
from taskdistill.pipelines.methods import METHODS
from taskdistill.pipelines.sweep import SweepStages

# method -> (the config key it searches, candidate rates). The first grids had three rates; each time the
# best rate sat at the edge of its grid, the next rate was added.
GRID: dict[str, tuple[str, list[float]]] = {
    "scratch": ("student.scratch.lr", [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]),
    "pretrained-finetune": ("student.pretrained_finetune.lr", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]),
    "task-agnostic": ("feature_distill.train.lr", [1e-3, 3e-3, 1e-2, 3e-2]),
    "task-oriented": ("distill.train.lr", [1e-3, 3e-3, 1e-2, 3e-2]),
    "task-oriented-pretrained": ("distill.pretrained_student_lr", [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]),
}
# segmentation (seg-composite): three rates around each configured one, extended the same way
SEG_GRID: dict[str, tuple[str, list[float]]] = {
    "scratch": ("student.scratch.lr", [1.5e-4, 5e-4, 1.5e-3, 5e-3, 1.5e-2]),
    "pretrained-finetune": ("student.pretrained_finetune.lr", [3e-5, 1e-4, 3e-4, 1e-3, 3e-3]),
    "task-agnostic": ("feature_distill.train.lr", [1.5e-3, 5e-3, 1.5e-2, 4.5e-2]),
    "task-oriented": ("distill.train.lr", [1.5e-3, 5e-3, 1.5e-2, 4.5e-2, 1.35e-1]),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="fashion-mnist-sweep")
    ap.add_argument("--budget", type=int, default=10, help="training labels per class")
    ap.add_argument("--val", "--val-per-class", dest="val", type=int, default=20,
                    help="validation labels per class (segmentation: validation images)")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--methods", default=None, help="comma-separated; default: every method of the grid")
    ap.add_argument("--out", default="benchmarks/results/lr_search")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--summary-only", action="store_true", help="write the summary from finished cells, run none")
    args = ap.parse_args()
    out = Path(args.out)
    path = args.config if Path(args.config).exists() else shipped_configs()[args.config]
    kind = kind_of(load_config(RunConfig, path, args.overrides))
    seg = kind.name == "segmentation"  # budgets count labeled images, not labels per class
    grid, metric = (SEG_GRID if seg else GRID), kind.metric
    split = ([f"segmentation.labeled_images={args.budget + args.val}", f"segmentation.val_images={args.val}"] if seg
             else [f"data.labels_per_class={args.budget + args.val}", f"data.val_per_class={args.val}"])
    base = [f"seed={args.seed}", *split, *args.overrides]
    base_cfg = load_config(RunConfig, path, base)
    set_threads(base_cfg.num_threads)
    device = resolve_device(base_cfg.device)
    scored = None
    if not args.summary_only:
        data = kind.prepare(base_cfg)
        assert data.val is not None
        scored = dataclasses.replace(data, test=data.val)  # every method is scored on the validation images
        print(f"labeled {len(data.labeled)}, val {len(data.val)}, transfer {len(data.transfer)}")
    for method in [] if scored is None else (args.methods or ",".join(grid)).split(","):
        key, rates = grid[method]
        for lr in rates:
            cell_file = out / "cells" / f"{method}__lr{lr:g}.json"
            if not cell_file.is_file():
                cfg = load_config(RunConfig, path, [*base, f"{key}={lr}"])
                start = time.perf_counter()
                stages = SweepStages(cfg, kind, scored, out / "teachers")
                rec = METHODS[method](Cell(cfg, kind, scored, device, out / ".cache", stages)).to_json()
                rec.update({"lr": lr, "key": key, "wall_seconds": round(time.perf_counter() - start, 1)})
                write_json(cell_file, rec)
    rows = []  # the summary covers every finished cell of the grid, whichever methods this call ran
    for method, (key, rates) in grid.items():
        for lr in rates:
            cell_file = out / "cells" / f"{method}__lr{lr:g}.json"
            if cell_file.is_file():
                rec = json.loads(cell_file.read_text())
                rows.append(rec)
                print(f"{method:<26} {key}={lr:g}: val {metric} {100 * rec[metric]:.2f}  ({rec['wall_seconds']:.0f} s)")
    best: dict[str, dict] = {}
    for r in rows:
        if r["method"] not in best or r[metric] > best[r["method"]][metric]:
            best[r["method"]] = r
    unit = "images" if seg else "labels/class"
    lines = [f"# Learning-rate search ({args.config}, {args.budget} {unit}, {args.val} validation {unit}, "
             f"seed {args.seed})", "", f"| method | key | lr | val {metric} | seconds |", "|---|---|---|---|---|"]
    for r in rows:
        mark = " **best**" if best[r["method"]] is r else ""
        lines.append(f"| {r['method']} | {r['key']} | {r['lr']:g} | {100 * r[metric]:.2f}{mark} | {r['wall_seconds']:.0f} |")
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    write_json(out / "summary.json", {"rows": rows, "best": {m: {"key": r["key"], "lr": r["lr"], f"val_{metric}": r[metric]}
                                                             for m, r in best.items()}})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
