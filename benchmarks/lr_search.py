"""Each sweep method's own small learning-rate search, scored on a validation split (never the test set).

Run: .venv/bin/python benchmarks/lr_search.py [--config fashion-mnist-sweep] [--budget 10]

The search uses its own labeled split (seed 100, not one of the sweep's seeds): `budget` training labels
plus `--val-per-class` validation labels per class, drawn from the training images; the validation
images stay out of the transfer set. Every (method, learning rate) pair is one cell, stored as it
finishes (`cells/*.json`), so a killed search continues. Writes `summary.md` / `summary.json` with the
best rate per method; copy those into the sweep config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from taskdistill.cli.common import shipped_configs
from taskdistill.config import RunConfig, load_config
from taskdistill.engine.atomic import write_json, write_text
from taskdistill.engine.device import resolve_device, set_threads
from taskdistill.pipelines.methods import METHODS, Cell
from taskdistill.pipelines.prepare import prepare_data

# method -> (the config key it searches, candidate rates). The first grids had three rates; each time the
# best rate sat at the edge of its grid, the next rate was added.
GRID: dict[str, tuple[str, list[float]]] = {
    "scratch": ("student.scratch.lr", [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]),
    "pretrained-finetune": ("student.pretrained_finetune.lr", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]),
    "task-agnostic": ("feature_distill.train.lr", [1e-3, 3e-3, 1e-2, 3e-2]),
    "task-oriented": ("distill.train.lr", [1e-3, 3e-3, 1e-2, 3e-2]),
    "task-oriented-pretrained": ("distill.pretrained_student_lr", [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="fashion-mnist-sweep")
    ap.add_argument("--budget", type=int, default=10, help="training labels per class")
    ap.add_argument("--val-per-class", type=int, default=20)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--methods", default=",".join(GRID))
    ap.add_argument("--out", default="benchmarks/results/lr_search")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--summary-only", action="store_true", help="write the summary from finished cells, run none")
    args = ap.parse_args()
    out = Path(args.out)
    path = args.config if Path(args.config).exists() else shipped_configs()[args.config]
    base = [f"seed={args.seed}", f"data.labels_per_class={args.budget + args.val_per_class}",
            f"data.val_per_class={args.val_per_class}", *args.overrides]
    base_cfg = load_config(RunConfig, path, base)
    set_threads(base_cfg.num_threads)
    device = resolve_device(base_cfg.device)
    scored = None
    if not args.summary_only:
        data = prepare_data(base_cfg)
        assert data.val is not None
        scored = dataclasses.replace(data, test=data.val)  # every method is scored on the validation images
        print(f"labeled {len(data.labeled)}, val {len(data.val)}, transfer {len(data.transfer)}")
    for method in [] if scored is None else args.methods.split(","):
        key, rates = GRID[method]
        for lr in rates:
            cell_file = out / "cells" / f"{method}__lr{lr:g}.json"
            if not cell_file.is_file():
                cfg = load_config(RunConfig, path, [*base, f"{key}={lr}"])
                start = time.perf_counter()
                rec = METHODS[method](Cell(cfg, scored, device, out / ".cache", out / "teachers"))
                rec.update({"lr": lr, "key": key, "wall_seconds": round(time.perf_counter() - start, 1)})
                write_json(cell_file, rec)
    rows = []  # the summary covers every finished cell of the grid, whichever methods this call ran
    for method, (key, rates) in GRID.items():
        for lr in rates:
            cell_file = out / "cells" / f"{method}__lr{lr:g}.json"
            if cell_file.is_file():
                rec = json.loads(cell_file.read_text())
                rows.append(rec)
                print(f"{method:<26} {key}={lr:g}: val top-1 {100 * rec['top1']:.2f}  ({rec['wall_seconds']:.0f} s)")
    best: dict[str, dict] = {}
    for r in rows:
        if r["method"] not in best or r["top1"] > best[r["method"]]["top1"]:
            best[r["method"]] = r
    lines = [f"# Learning-rate search ({args.config}, {args.budget} labels/class, {args.val_per_class} val/class, "
             f"seed {args.seed})", "", "| method | key | lr | val top-1 | seconds |", "|---|---|---|---|---|"]
    for r in rows:
        mark = " **best**" if best[r["method"]] is r else ""
        lines.append(f"| {r['method']} | {r['key']} | {r['lr']:g} | {100 * r['top1']:.2f}{mark} | {r['wall_seconds']:.0f} |")
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    write_json(out / "summary.json", {"rows": rows, "best": {m: {"key": r["key"], "lr": r["lr"], "val_top1": r["top1"]}
                                                             for m, r in best.items()}})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
