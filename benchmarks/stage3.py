"""Stage 3 (the finetune on the labels after distillation) on one distilled student: variants side by side.

For each seed, one `taskdistill run` of `--method` (task-oriented by default, or another three-stage method:
task-oriented-pretrained, pseudo-label, distill-linear-probe: teacher, distilled student, plain finetune) in
`<out>/base-s<seed>/`; then each variant of stage 3 starts from that run's teacher and distilled student
(`run(..., only=[<final stage>], given=...)`, as the `taskdistill finetune` verb) in `<out>/<variant>-s<seed>/`.
Selection is on a validation split (`--val` labeled images per class held out of the labels, split seed 100,
kept out of the transfer set, as in benchmarks/lr_search.py); the test split only confirms.

Every run starts from the plain stage 3 of before issue 20 (`PLAIN`: no anchor, lr 1e-4); a variant changes it.
`--vary distilled` compares variants of stage 2 instead: each variant distils its own student from the base's
teacher and finishes with the config's own stage 3 (no `PLAIN`); compare the distilled student's validation
score (what the variant trains) and the final one.
`--teachers DIR` takes each seed's teacher from `DIR/base-s<seed>/` (a finished run of this script with the
same config, labels and seeds) and its cached outputs from `DIR/.cache`, instead of training and caching again.
Run: .venv/bin/python benchmarks/stage3.py [--config fashion-mnist-sweep] [--method task-oriented] [--seeds 0,1,2]
     [--set key=value] [--vary final|distilled] [--teachers DIR] [--summary-name NAME]
     [--variant NAME=key=value,key=value ...]   (NAME= with no settings: the base run itself)
Writes `<out>/summary.md` / `summary.json`: per seed and variant, val and test top-1 of the distilled student
and of the student after stage 3, and the change stage 3 makes.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from taskdistill.atomic import write_json, write_text
from taskdistill.cli.common import shipped_configs
from taskdistill.config import RunConfig, load_config
from taskdistill.pipelines.run import run
from taskdistill.pipelines.run_folder import read_run_state

PLAIN = ["distill.finetune_anchor=0", "student.finetune.lr=1e-4"]  # the finetune before issue 20 (the base runs')
DEFAULT_VARIANTS = {
    "plain": [],  # a variant with no settings is the base run itself
    "anchor-1": ["distill.finetune_anchor=1.0", "distill.finetune_anchor_lr=1e-4"],
    "anchor-1-lr3e-4": ["distill.finetune_anchor=1.0", "distill.finetune_anchor_lr=3e-4"],
    "anchor-1-lr1e-3": ["distill.finetune_anchor=1.0", "distill.finetune_anchor_lr=1e-3"],
    "anchor-1-lr3e-3": ["distill.finetune_anchor=1.0", "distill.finetune_anchor_lr=3e-3"],
    "plain-lr1e-3": ["student.finetune.lr=1e-3"],
}


THREE_STAGE = ("task-oriented", "task-oriented-pretrained", "pseudo-label", "distill-linear-probe")


def _stages(method: str) -> tuple[str, str]:
    """(distilled stage, final stage) of a three-stage method, as pipelines/methods.py names them."""
    return ("student_distilled", "student") if method == "task-oriented" else (f"{method}.distilled", method)


def _config(name: str, sets: list[str]) -> RunConfig:
    path = name if Path(name).exists() else shipped_configs()[name]
    return load_config(RunConfig, path, sets)


def _top1(folder: Path, stage: str) -> tuple[float | None, float]:
    info = read_run_state(folder)["stages"][stage]
    val = info.get("val", {}).get("top1")
    return (100 * val if val is not None else None), 100 * info["test"]["top1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="fashion-mnist-sweep")
    ap.add_argument("--method", default="task-oriented", choices=THREE_STAGE)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--val", type=int, default=20, help="validation images per class (0: none)")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="key=value for every run")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=key=value,key=value (stage-3 settings on top of the plain finetune); default: "
                         "DEFAULT_VARIANTS")
    ap.add_argument("--vary", default="final", choices=("final", "distilled"),
                    help="final: variants of stage 3 on the base's distilled student; distilled: variants of stage 2 "
                         "(each distils its own student from the base's teacher, then the config's stage 3)")
    ap.add_argument("--teachers", default=None,
                    help="a finished output folder of this script: its base-s<seed> teachers and .cache are used")
    ap.add_argument("--out", default="benchmarks/results/stage3")
    ap.add_argument("--summary-name", default="summary", help="file name of the summary (.md/.json) in --out")
    args = ap.parse_args()
    out = Path(args.out)
    variants = {v.split("=", 1)[0]: [s for s in v.split("=", 1)[1].split(",") if s] for v in args.variant} or DEFAULT_VARIANTS
    teachers = Path(args.teachers) if args.teachers else None
    cache = (teachers or out) / ".cache"
    common = [*(PLAIN if args.vary == "final" else []), *args.sets, f"output_dir={out}", f"distill.cache_dir={cache}"]
    if args.val:  # the validation images come out of the labeled images: budget + val labeled per class
        budget = _config(args.config, args.sets).data.labels_per_class or 10
        common += [f"data.labels_per_class={budget + args.val}", f"data.val_per_class={args.val}",
                   "data.split_seed=100"]
    method, methods = args.method, [f"run.methods=[{args.method}]"]
    distilled, final = _stages(method)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        base_name = f"base-s{seed}"
        base = out / base_name
        cfg = _config(args.config, [*common, f"seed={seed}", f"name={base_name}", *methods])
        teacher = str((teachers or out) / base_name / "checkpoints" / "teacher")
        if teachers is not None and not Path(teacher + ".json").is_file():  # checkpoints are <name>.json + weights
            raise SystemExit(f"--teachers {teachers}: no teacher checkpoint at {teacher}; run this script there first "
                             f"(its base runs train and keep the teachers) or drop --teachers")
        if final not in read_run_state(base).get("stages", {}):  # a finished base is read, not reopened
            if teachers is None:
                run(cfg, mode="resume", methods=[method])
            else:
                run(cfg, mode="resume", methods=[method], only=[distilled, final], given={"teacher": teacher})
        for name, sets in variants.items():
            if not sets:  # the base run's own stage 3 (and stage 2)
                folder = base
            else:
                folder = out / f"{name}-s{seed}"
                vcfg = _config(args.config, [*common, *sets, f"seed={seed}", f"name={name}-s{seed}", *methods])
                given = {"teacher": teacher}
                if args.vary == "final":
                    given[distilled] = str(base / "checkpoints" / distilled)
                if final not in read_run_state(folder).get("stages", {}):
                    run(vcfg, mode="resume", methods=[method], only=[final] if args.vary == "final" else
                        [distilled, final], given=given)
            d_val, d_test = _top1(base if args.vary == "final" else folder, distilled)
            f_val, f_test = _top1(folder, final)
            rows.append({"seed": seed, "variant": name, "sets": sets, "distilled_val": d_val, "distilled_test": d_test,
                         "final_val": f_val, "final_test": f_test})
            print(f"seed {seed} {name:>20}: distilled val {d_val} test {d_test:.2f} -> val {f_val} test {f_test:.2f}")
    write_json(out / f"{args.summary_name}.json", {"config": args.config, "method": method, "vary": args.vary, "sets": args.sets,
                                      "rows": rows})
    what = "Stage 3 variants" if args.vary == "final" else "Stage 2 variants"
    start = "every row starts from PLAIN" if args.vary == "final" else "each row then the config's stage 3"
    lines = [f"# {what} ({method}, {args.config}; {' '.join(args.sets) or 'shipped settings'}; {start})", "",
             "| variant | settings | distilled val / test (mean) | val change (mean; seeds) | test change (mean; seeds) "
             "| val after (mean; seeds) | test top-1 after |",
             "|---|---|---|---|---|---|---|"]
    for name, sets in variants.items():
        mine = [r for r in rows if r["variant"] == name]
        dv = [r["final_val"] - r["distilled_val"] for r in mine if r["final_val"] is not None]
        dt = [r["final_test"] - r["distilled_test"] for r in mine]
        fmt = lambda xs, sign="+": (f"{statistics.mean(xs):{sign}.2f} ({', '.join(f'{x:{sign}.2f}' for x in xs)})"  # noqa: E731
                                    if xs else "-")
        after = [r["final_val"] for r in mine if r["final_val"] is not None]
        base_sets = "no anchor, lr 1e-4 (PLAIN)" if args.vary == "final" else "the base run's (its config.yaml)"
        d_val = [r["distilled_val"] for r in mine if r["distilled_val"] is not None]
        d_both = (f"{statistics.mean(d_val):.2f} / " if d_val else "- / ") + \
            f"{statistics.mean(r['distilled_test'] for r in mine):.2f}"
        lines.append(f"| {name} | {' '.join(sets) or base_sets} | {d_both} | {fmt(dv)} | {fmt(dt)} | "
                     f"{fmt(after, sign='')} | {statistics.mean(r['final_test'] for r in mine):.2f} |")
    write_text(out / f"{args.summary_name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
