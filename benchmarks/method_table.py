"""The method table of one config at one label budget: each method's top-1 over seeds and the paired
differences the issue-20 claims rest on (task-oriented vs pretrained-finetune and pseudo-label,
task-oriented-pretrained vs pretrained-finetune, stage 3's change for every method that has one).

Fashion-MNIST, the whole transfer set (BENCHMARKS.md "The paper's claim"):
  .venv/bin/python benchmarks/method_table.py --config fashion-mnist-full --out benchmarks/results/full \
      --methods teacher-finetune,task-oriented,pseudo-label,task-oriented-pretrained --set num_threads=1 \
      --baselines benchmarks/results/baselines-5seeds
The second dataset, built-in `clipart` (17 classes of Debian clip art; docs/data.md):
  .venv/bin/python benchmarks/method_table.py --config clipart-sweep --out benchmarks/results/clipart_sweep \
      --set num_threads=1
Smoke: add --smoke --out /tmp/table-smoke (1 seed, 200 transfer images, 1 epoch or a few steps per stage).

Cells go to `--out`, resumable one by one (`run_sweep`); `--baselines DIR` (repeatable) reads the cells of
methods that `--out` lacks from another sweep folder of the same data and seeds (e.g. scratch and
pretrained-finetune, which do not depend on the transfer set). `--summary-only` writes the summary from the
finished cells. `summary.md` / `summary.json`: mean +- std over seeds, per-seed values, paired differences.
clipart needs Debian's openclipart-png and tuxpaint-stamps-default (scripts/setup_clipart_data.sh).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from taskdistill.atomic import write_json, write_text
from taskdistill.cli.common import shipped_configs
from taskdistill.config import RunConfig, load_config
from taskdistill.pipelines.sweep import run_sweep
from taskdistill.report.sweep_report import mean_std

METHODS = ("teacher-finetune", "scratch", "pretrained-finetune", "task-agnostic", "task-oriented",
           "task-oriented-pretrained", "pseudo-label")
PAIRS = (("task-oriented", "pretrained-finetune"), ("task-oriented", "pseudo-label"),
         ("task-oriented-pretrained", "pretrained-finetune"))
SMOKE = [
    "distill.transfer.max_images=200", "teacher.probe.epochs=1", "teacher.probe.min_steps=0",
    "teacher.train.epochs=1", "distill.train.epochs=1", "feature_distill.train.epochs=1",
    "student.finetune.epochs=1", "student.finetune.min_steps=0", "student.scratch.min_steps=3",
    "student.pretrained_finetune.min_steps=3",
]


def load_cells(folder: Path, budget: int) -> dict[str, dict[int, dict[str, Any]]]:
    """{method: {seed: cell record}} of the finished cells at `budget`."""
    cells: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted((folder / "cells").glob(f"*__b{budget}__s*.json")):
        rec = json.loads(path.read_text())
        cells.setdefault(rec["method"], {})[int(rec["seed"])] = rec
    return cells


def summarize(out: Path, budget: int, seeds: list[int], title: str,
              baselines: list[Path] | None = None, name: str = "summary") -> dict[str, Any]:
    """<name>.md / <name>.json from the finished cells of `seeds` (methods missing in `out` from `baselines`)."""
    cells = load_cells(out, budget)
    source = {m: out for m in cells}
    for folder in baselines or []:
        for method, recs in load_cells(folder, budget).items():
            if method not in cells:
                cells[method], source[method] = recs, folder
    rows = []
    for method in [m for m in METHODS if m in cells] + sorted(set(cells) - set(METHODS)):
        recs = [cells[method][s] for s in seeds if s in cells[method]]
        if not recs:
            continue
        mean, std = mean_std([r["top1"] for r in recs])
        rows.append({"method": method, "seeds": [r["seed"] for r in recs], "top1_mean": mean, "top1_std": std,
                     "per_seed": {r["seed"]: r["top1"] for r in recs},
                     "seconds": statistics.fmean(r["seconds"] for r in recs)})
    pairs = []
    for a, b in PAIRS:
        common = [s for s in seeds if s in cells.get(a, {}) and s in cells.get(b, {})]
        diffs = {s: cells[a][s]["top1"] - cells[b][s]["top1"] for s in common}
        mean, std = mean_std(list(diffs.values())) if diffs else (None, None)
        pairs.append({"a": a, "b": b, "per_seed": diffs, "mean": mean, "std": std})
    stage3 = []  # what the finetune on the labels changed: final top-1 minus the distilled student's (cells
    for method, by_seed in cells.items():  # record each evaluated stage's scores)
        diffs = {}
        for s in seeds:
            scores = by_seed.get(s, {}).get("stage_scores", {})
            before = [v["top1"] for k, v in scores.items() if k.endswith("distilled")]
            if before:
                diffs[s] = by_seed[s]["top1"] - before[0]
        if diffs:
            mean, std = mean_std(list(diffs.values()))
            stage3.append({"method": method, "per_seed": diffs, "mean": mean, "std": std})
    summary = {"budget": budget, "seeds": seeds, "rows": rows, "pairs": pairs, "stage3": stage3}
    write_json(out / f"{name}.json", summary)

    def pct(x: float | None, signed: bool = False) -> str:
        return "-" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")

    n_images = next((r.get("num_images") for m in cells.values() for r in m.values() if r.get("num_images")), None)
    lines = [f"# {title}", "",
             f"{budget} labels per class; top-1 % on the test split ({n_images or '?'} images), mean +- std over "
             f"seeds {','.join(map(str, seeds))} (std: sample, ddof=1). Config: `{out / 'sweep.yaml'}`.", "",
             "| method | seeds | top-1 % | per seed | mean seconds | cells from |", "|---|---|---|---|---|---|"]
    for r in rows:
        per_seed = ", ".join(f"s{s}: {pct(v)}" for s, v in r["per_seed"].items())
        lines.append(f"| {r['method']} | {len(r['seeds'])} | {pct(r['top1_mean'])} +- {pct(r['top1_std'])} | "
                     f"{per_seed} | {r['seconds']:.0f} | `{source[r['method']]}` |")
    lines += ["", "Paired differences (same seed: same labels, same transfer set), percentage points:", "",
              "| comparison | per seed | mean +- std |", "|---|---|---|"]
    for p in pairs:
        per_seed = ", ".join(f"s{s}: {pct(d, True)}" for s, d in p["per_seed"].items()) or "-"
        spread = "-" if p["mean"] is None else f"{pct(p['mean'], True)} +- {pct(p['std'])}"
        lines.append(f"| {p['a']} - {p['b']} | {per_seed} | {spread} |")
    if stage3:
        lines += ["", "Stage 3 (finetune on the labels after distillation): top-1 after minus the distilled student's, "
                  "points:", "", "| method | per seed | mean +- std |", "|---|---|---|"]
        for r in stage3:
            per_seed = ", ".join(f"s{s}: {pct(d, True)}" for s, d in r["per_seed"].items())
            lines.append(f"| {r['method']} | {per_seed} | {pct(r['mean'], True)} +- {pct(r['std'])} |")
    write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="a shipped config name or a YAML path")
    ap.add_argument("--baselines", action="append", default=[], type=Path,
                    help="another sweep folder to read the cells of methods --out lacks from")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--budget", type=int, default=10, help="labels per class")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny version: 1 seed, 200 transfer images, 1 epoch")
    ap.add_argument("--summary-only", action="store_true", help="write the summary from finished cells, run none")
    ap.add_argument("--summary-name", default="summary", help="the summary's file name, without .md / .json")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value, e.g. num_threads=1")
    args = ap.parse_args()
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = list(args.overrides)
    if args.smoke:
        seeds, extra = seeds[:1], [*SMOKE, *extra]
    path = args.config if Path(args.config).exists() else shipped_configs()[args.config]
    cfg = load_config(RunConfig, path, extra)
    if not args.summary_only:
        run_sweep(cfg, args.methods.split(","), [args.budget], seeds, out)
    summarize(out, args.budget, seeds, f"Method table on `{cfg.data.dataset}` ({cfg.name})", args.baselines,
              args.summary_name)
    print((out / f"{args.summary_name}.md").read_text())


if __name__ == "__main__":
    main()
