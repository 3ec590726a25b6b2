"""Issue 7's table: mIoU of the segmentation methods on the built-in `fashion-composite` task, for three
labeled-image budgets x three seeds, and the targets (task-oriented >= scratch + 5 mIoU at the smallest
budget, and above task-agnostic).

Run:   .venv/bin/python benchmarks/segmentation_sweep.py
       [--budgets 10,30,100] [--seeds 0,1,2] [--out benchmarks/results/segmentation_sweep] [--set KEY=VALUE ...]
Smoke: .venv/bin/python benchmarks/segmentation_sweep.py --smoke --out /tmp/seg-smoke   (a few minutes: one
       budget and seed, a smaller pool and transfer set, shorter schedules; not comparable to the full table)

It is `taskdistill sweep seg-composite` (resumable cell by cell: rerun to continue) plus `summary.md` /
`summary.json`: the method x budget mIoU table (mean ± sample std over seeds, per-seed values), pixel
accuracy, the task-oriented gaps per budget and seed, and the mean wall time per method.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from taskdistill.atomic import write_json, write_text
from taskdistill.cli.common import shipped_configs
from taskdistill.config import RunConfig, load_config
from taskdistill.pipelines.sweep import run_sweep
from taskdistill.report.markdown import markdown_table

METHODS = "scratch,pretrained-finetune,task-agnostic,task-oriented,teacher-finetune"
# The smoke preset: the same task and models with about 1/20 of the work, scratch / task-agnostic /
# task-oriented only; it checks the pipeline and its throughput, not the claim.
SMOKE = [
    "segmentation.composite.train_images=800", "segmentation.composite.test_images=200",
    "distill.transfer.max_images=400", "distill.train.epochs=2", "feature_distill.train.epochs=2",
    "teacher.probe.min_steps=30", "teacher.train.min_steps=30", "student.scratch.min_steps=80",
    "student.pretrained_finetune.min_steps=80", "student.finetune.min_steps=30",
]
SMOKE_METHODS = "scratch,task-agnostic,task-oriented"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _stats(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {statistics.stdev(values):.2f}"


def _signed(x: float | None) -> str:
    return "–" if x is None else f"{x:+.2f}"


def summarize(records: list[dict[str, Any]], budgets: list[int], seeds: list[int]) -> tuple[str, dict[str, Any]]:
    """Markdown and JSON summaries of the records (metrics in %)."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    cell = {(r["method"], r["budget"], r["seed"]): r for r in records}

    def vals(m: str, b: int, key: str = "miou") -> list[float]:
        return [100 * cell[(m, b, s)][key] for s in seeds if (m, b, s) in cell]

    rows = [[m] + [_stats(v) if (v := vals(m, b)) else "–" for b in budgets]
            + [f"{statistics.mean(r['seconds'] for r in records if r['method'] == m):.0f}"] for m in methods]
    table = markdown_table(["mIoU %"] + [f"{b} labeled images" for b in budgets] + ["mean wall time (s)"], rows)
    pix = markdown_table(["pixel accuracy %"] + [f"{b} labeled images" for b in budgets],
                         [[m] + [_stats(v) if (v := vals(m, b, "pixel_accuracy")) else "–" for b in budgets]
                          for m in methods])
    gaps: dict[str, dict[int, list[float]]] = {}
    for other in ("scratch", "task-agnostic", "pretrained-finetune"):
        if "task-oriented" in methods and other in methods:
            gaps[f"task-oriented - {other}"] = {
                b: [100 * (cell[("task-oriented", b, s)]["miou"] - cell[(other, b, s)]["miou"]) for s in seeds
                    if ("task-oriented", b, s) in cell and (other, b, s) in cell] for b in budgets}
    gap_rows = [[name] + [" ".join(f"{g:+.2f}" for g in per[b]) + (f" (mean {statistics.mean(per[b]):+.2f})"
                                                                    if per[b] else "") for b in budgets]
                for name, per in gaps.items()]
    gap_table = markdown_table(["mIoU points, per seed"] + [f"{b} labeled images" for b in budgets], gap_rows)
    smallest = min(budgets)
    target = {}
    if gaps:
        to_s = gaps.get("task-oriented - scratch", {}).get(smallest, [])
        to_a = gaps.get("task-oriented - task-agnostic", {}).get(smallest, [])
        target = {"budget": smallest,
                  "task_oriented_minus_scratch": statistics.mean(to_s) if to_s else None,
                  "task_oriented_minus_task_agnostic": statistics.mean(to_a) if to_a else None}
        target["met"] = bool(to_s and to_a and statistics.mean(to_s) >= 5.0 and statistics.mean(to_a) > 0.0)
    text = "\n\n".join([table, pix, gap_table,
                        f"Target at {smallest} labeled images (task-oriented >= scratch + 5 mIoU and > task-agnostic, "
                        f"means over seeds): **{'met' if target.get('met') else 'not met'}** (task-oriented − scratch "
                        f"{_signed(target.get('task_oriented_minus_scratch'))}, task-oriented − task-agnostic "
                        f"{_signed(target.get('task_oriented_minus_task_agnostic'))})."]) + "\n"
    return text, {"gaps": {k: {str(b): v for b, v in per.items()} for k, per in gaps.items()}, "target": target}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", type=_ints, default=[10, 30, 100])
    ap.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--out", default="benchmarks/results/segmentation_sweep")
    ap.add_argument("--smoke", action="store_true", help="a few-minute check of the pipeline (see SMOKE)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    out = Path(args.out)
    overrides = [f"output_dir={out / 'runs'}", *(SMOKE if args.smoke else []), *args.overrides]
    cfg = load_config(RunConfig, shipped_configs()["seg-composite"], overrides)
    if args.smoke:
        args.budgets, args.seeds = args.budgets[:1], args.seeds[:1]
        args.methods = SMOKE_METHODS if args.methods == METHODS else args.methods
    start = time.perf_counter()
    records = run_sweep(cfg, args.methods.split(","), args.budgets, args.seeds, out)
    text, extra = summarize(records, args.budgets, args.seeds)
    header = (f"# fashion-composite segmentation sweep\n\nCommand: `.venv/bin/python benchmarks/segmentation_sweep.py "
              f"--budgets {','.join(map(str, args.budgets))} --seeds {','.join(map(str, args.seeds))}"
              f"{' --smoke' if args.smoke else ''}{''.join(f' --set {o}' for o in args.overrides)}`; "
              f"this call's wall time {time.perf_counter() - start:.0f} s (finished cells are not rerun).\n\n")
    write_text(out / "summary.md", header + text)
    write_json(out / "summary.json", {"budgets": args.budgets, "seeds": args.seeds, "smoke": args.smoke,
                                      "overrides": args.overrides, **extra})
    print(header + text)


if __name__ == "__main__":
    main()
