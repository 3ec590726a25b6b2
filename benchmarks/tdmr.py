"""TDMR on Fashion-MNIST with 10 labels per class: the method, its plain-distillation reference, ablations.

Run: .venv/bin/python benchmarks/tdmr.py [--seeds 0,1,2] [--only main,prompt-none,...] [--set key=value]
Smoke: .venv/bin/python benchmarks/tdmr.py --smoke --out /tmp/tdmr-smoke   (1 seed, 300 transfer images,
1 epoch per stage, main + one ablation; minutes on a CPU).

Every group is its own `run_sweep` folder under `--out` (default benchmarks/results/tdmr), so each is
resumable cell by cell and keeps its config:
    main/                 `tdmr` (padding prompt, linear-logits map, progressive) and `distill-linear-probe`
                          (the shipped default prompt is now `none`: group `prompt-none`)
    ablation-<name>/      `tdmr` with one change (ABLATIONS below)
All use config `fashion-mnist-sweep`, with `tdmr.distill` set to that config's `distill.train` so TDMR's
distillation sees exactly as many student images as task-oriented distillation. `summary.md` /
`summary.json` compare them with the baseline cells of the main sweep folder (`--baselines`,
benchmarks/results/sweep/cells/{task-oriented,task-agnostic,scratch}__b10__s*.json) where present.
Ablations run on `--ablation-seeds` (default seed 0 only: each costs a full TDMR run) and are compared with
the main group on the same seeds.
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
from taskdistill.pipelines.sweep import cell_path, run_sweep
from taskdistill.report.sweep_report import mean_std

# The main group is the configuration measured for issue 5 (padding prompt); the shipped default became
# `tdmr.prompt=none` after the 3-seed prompt check (issue 20), which is the `prompt-none` group.
MAIN = ["tdmr.prompt=padding"]
ABLATIONS: dict[str, list[str]] = {
    "prompt-none": ["tdmr.prompt=none"],
    "prompt-full": ["tdmr.prompt=full"],
    "map-flm": ["tdmr.label_mapping=flm"],
    "map-ilm": ["tdmr.label_mapping=ilm"],
    "map-linear-features": ["tdmr.label_mapping=linear-features"],
    "one-shot": ["tdmr.schedule=one-shot"],
    "joint": ["tdmr.schedule=joint", "tdmr.joint_weight=0.5"],
    # issue 6's many-class check: the 1000-class source outputs stored in full instead of top-16 (64 B/view)
    "proxy-full": ["tdmr.proxy_soft_labels=full"],
}
BASELINES = ("task-oriented", "task-agnostic", "scratch")
REFERENCES = ("teacher-linear", "teacher-finetune")  # reported too when the main sweep has them
SMOKE = [
    "distill.transfer.max_images=300", "tdmr.distill.epochs=1", "tdmr.reprogram.epochs=1",
    "tdmr.reprogram.min_steps=0", "student.finetune.epochs=1", "student.finetune.min_steps=0",
    "teacher.probe.epochs=1", "teacher.probe.min_steps=0", "distill.train.epochs=1", "tdmr.evaluate_teacher=false",
]


def config(name: str, cache_dir: Path, extra: list[str]) -> RunConfig:
    """The benchmark config: `name` (shipped or a path), TDMR's distillation = `distill.train`, then `extra`."""
    path = name if Path(name).exists() else shipped_configs()[name]
    base = load_config(RunConfig, path, extra)
    t = base.distill.train
    aligned = [f"tdmr.distill.{k}={getattr(t, k)}" for k in ("epochs", "batch_size", "lr", "weight_decay",
                                                                "optimizer", "warmup_epochs", "augment", "min_steps")]
    return load_config(RunConfig, path, [*aligned, f"distill.cache_dir={cache_dir}", *extra])


def _paired(recs: list[dict[str, Any]], reference: dict[int, float]) -> float | None:
    """Mean of `top1 - reference[seed]` over the records whose seed the reference has."""
    diffs = [r["top1"] - reference[r["seed"]] for r in recs if r["seed"] in reference]
    return statistics.fmean(diffs) if diffs else None


def _row(name: str, recs: list[dict[str, Any]], reference: dict[int, float],
         tdmr_main: dict[int, float] | None = None) -> dict[str, Any]:
    top1 = [r["top1"] for r in recs]
    mean, std = mean_std(top1)
    teacher_top1 = [r["reprogrammed_teacher_top1"] for r in recs if r.get("reprogrammed_teacher_top1") is not None]
    return {
        "name": name, "seeds": sorted(r["seed"] for r in recs), "top1_mean": mean, "top1_std": std,
        "delta_vs_task_oriented": _paired(recs, reference),
        "delta_vs_tdmr": _paired(recs, tdmr_main) if tdmr_main is not None else None,
        "reprogrammed_teacher_top1": statistics.fmean(teacher_top1) if teacher_top1 else None,
        "teacher_images": statistics.fmean(r["teacher_images"] for r in recs),
        "student_images": statistics.fmean(r["student_images"] for r in recs),
        "seconds": statistics.fmean(r["seconds"] for r in recs),
        "trainable_params": recs[0].get("trainable_params"), "trainable_fraction": recs[0].get("trainable_fraction"),
    }


def _pct(x: float | None, signed: bool = False) -> str:
    return "-" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")


def summarize(out: Path, budget: int, seeds: list[int], baselines: Path) -> dict[str, Any]:
    """Collect the finished cells of every group (whichever invocation ran them, any seed) and the main
    sweep's baselines (`seeds`) into summary.md/json. Ablations are compared with the main `tdmr` on the
    seeds they ran."""
    def load(folder: Path, method: str, wanted: list[int] | None = None) -> list[dict[str, Any]]:
        recs = [json.loads(p.read_text()) for p in sorted(cell_path(folder, method, budget, 0).parent.glob(
            f"{method}__b{budget}__s*.json"))]
        return [r for r in recs if wanted is None or r["seed"] in wanted]

    task_oriented = {r["seed"]: r["top1"] for r in load(baselines, "task-oriented", seeds)}
    tdmr_main = {r["seed"]: r["top1"] for r in load(out / "main", "tdmr")}
    rows = []
    for method in (*BASELINES, *REFERENCES):
        recs = load(baselines, method, seeds)
        if recs:
            rows.append(_row(f"{method} (main sweep)", recs, task_oriented))
    for group in ["main", *ABLATIONS]:
        folder = out / (group if group == "main" else f"ablation-{group}")
        for method in ("tdmr", "distill-linear-probe") if group == "main" else ("tdmr",):
            recs = load(folder, method)
            if recs:
                label = method if group == "main" else f"tdmr, {group} ({', '.join(ABLATIONS[group])})"
                rows.append(_row(label, recs, task_oriented, None if group == "main" else tdmr_main))
    summary = {"budget": budget, "seeds": seeds, "baselines": str(baselines), "rows": rows}
    write_json(out / "summary.json", summary)
    lines = [
        f"# TDMR on Fashion-MNIST, {budget} labels per class, seeds {','.join(map(str, seeds))}", "",
        "Student tf_efficientnet_lite0 @ 32 px; teacher tf_efficientnet_lite2 @ 64 px (frozen ImageNet weights for "
        "tdmr). Top-1 on the 10,000 test images, mean +- std over seeds; delta = mean paired difference with "
        "task-oriented (same seed); an ablation's delta vs tdmr is its mean paired difference with the main tdmr "
        "on the seeds the ablation ran. Teacher images: forward passes (tdmr: + reprogramming forward+backward). "
        "Trainable share: trainable teacher parameters (prompt + label map; probe head) / teacher parameters.", "",
        "| method | seeds | top-1 % | delta vs task-oriented (pp) | delta vs tdmr (pp) | reprogrammed teacher top-1 % "
        "| teacher images | student images | trainable teacher params (share) | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = "-" if r["trainable_params"] is None else f"{r['trainable_params']:,} ({100 * r['trainable_fraction']:.3f} %)"
        lines.append(f"| {r['name']} | {','.join(map(str, r['seeds']))} | {_pct(r['top1_mean'])} +- {_pct(r['top1_std'])} | "
                     f"{_pct(r['delta_vs_task_oriented'], True)} | {_pct(r['delta_vs_tdmr'], True)} | "
                     f"{_pct(r['reprogrammed_teacher_top1'])} | "
                     f"{r['teacher_images']:,.0f} | {r['student_images']:,.0f} | {share} | {r['seconds']:.0f} |")
    if not task_oriented:
        lines += ["", f"No baseline cells found under {baselines}/cells: run the main sweep for the comparison."]
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="fashion-mnist-sweep")
    ap.add_argument("--budget", type=int, default=10, help="labels per class")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--only", default=None, help="comma-separated groups: main and/or ablation names")
    ap.add_argument("--out", default="benchmarks/results/tdmr")
    ap.add_argument("--baselines", default="benchmarks/results/sweep", help="the main sweep's folder")
    ap.add_argument("--ablation-seeds", default="0", help="seeds for the ablation groups (main uses --seeds)")
    ap.add_argument("--smoke", action="store_true", help="tiny version: 1 seed, 300 transfer images, 1 epoch")
    ap.add_argument("--summary-only", action="store_true", help="write the summary from finished cells, run none")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value for every group")
    args = ap.parse_args()
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    ablation_seeds = [int(s) for s in args.ablation_seeds.split(",")]
    groups = ["main", *ABLATIONS] if args.only is None else args.only.split(",")
    extra = list(args.overrides)
    if args.smoke:
        seeds, ablation_seeds, extra = seeds[:1], seeds[:1], [*SMOKE, *extra]
        groups = groups if args.only is not None else ["main", "prompt-none"]
    unknown = [g for g in groups if g != "main" and g not in ABLATIONS]
    if unknown:
        raise SystemExit(f"unknown group(s) {unknown}; choose from main, {', '.join(ABLATIONS)}")
    for group in [] if args.summary_only else groups:
        changes = MAIN if group == "main" else ABLATIONS[group]
        cfg = config(args.config, out / ".cache", [*extra, *changes])
        methods = ["tdmr", "distill-linear-probe"] if group == "main" else ["tdmr"]
        folder = out / (group if group == "main" else f"ablation-{group}")
        print(f"== {group}: {methods} -> {folder} {changes}")
        run_sweep(cfg, methods, [args.budget], seeds if group == "main" else ablation_seeds, folder)
    summary = summarize(out, args.budget, seeds, Path(args.baselines))
    print((out / "summary.md").read_text())
    print(f"{len(summary['rows'])} rows -> {out / 'summary.md'}")


if __name__ == "__main__":
    main()
