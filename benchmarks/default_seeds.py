"""The built-in default over several seeds: teacher, student from scratch, transferred student.

Run: .venv/bin/python benchmarks/default_seeds.py [--seeds 0,1,2] [--out benchmarks/results/default_seeds]
Writes one run folder per seed and `summary.md` / `summary.json` with mean and std per row, the gaps
the core issue asks for (transferred - scratch, transferred - teacher) and each run's wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from taskdistill.atomic import write_json, write_text
from taskdistill.config import RunConfig, load_config
from taskdistill.pipelines.run import run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="benchmarks/results/default_seeds")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = []
    for seed in seeds:
        cfg = load_config(RunConfig, None, [f"seed={seed}", f"name=seed{seed}", f"output_dir={args.out}",
                                            *args.overrides])
        start = time.perf_counter()
        result = run(cfg, mode="force")
        rows = {r["stage"]: r["test"]["top1"] for r in result.rows}
        per_seed.append({"seed": seed, "wall_seconds": round(time.perf_counter() - start, 1), **rows})
    keys = ["teacher", "student_distilled", "student", "scratch"]
    lines = ["| | " + " | ".join(f"seed {s['seed']}" for s in per_seed) + " | mean ± std |", "|---" * (len(seeds) + 2) + "|"]
    summary = {}
    for k in keys:
        vals = [100 * s[k] for s in per_seed]
        mean, std = statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0
        summary[k] = {"mean": mean, "std": std, "values": vals}
        lines.append(f"| {k} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {mean:.2f} ± {std:.2f} |")
    gaps = {
        "student_minus_scratch": [100 * (s["student"] - s["scratch"]) for s in per_seed],
        "student_minus_teacher": [100 * (s["student"] - s["teacher"]) for s in per_seed],
    }
    for name, vals in gaps.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:+.2f}" for v in vals) + f" | {statistics.mean(vals):+.2f} |")
    lines.append("| wall time (s) | " + " | ".join(f"{s['wall_seconds']:.0f}" for s in per_seed) + " | |")
    table = "\n".join(lines)
    out = Path(args.out)
    write_json(out / "summary.json", {"per_seed": per_seed, "summary": summary, "gaps": gaps})
    write_text(out / "summary.md", table + "\n")
    print(table)
    print(json.dumps({k: round(statistics.mean(v), 2) for k, v in gaps.items()}))


if __name__ == "__main__":
    main()
