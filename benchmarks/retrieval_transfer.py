"""Retrieval-augmented transfer sets on the demo pool: each curation strategy vs the oracle transfer set.

For Fashion-MNIST with `--labels-per-class` labels and a fixed transfer-set size `--n`:
  oracle    the task's own unlabeled training images (a seeded random N), i.e. the default transfer set
  <strategy> N images curated from the demo pool (`taskdistill curate`) with the run's labeled images as queries
Each transfer set goes through the task-oriented pipeline (teacher finetune once, in the oracle run; then
distillation over the transfer set and student finetune). Recorded per row: precision (share of curated images
from Fashion-MNIST), the source histogram, leakage drops, distilled and transferred student top-1.

Run (long: one distillation + finetune per strategy; the lead runs it):
  scripts/setup_pool_data.sh
  .venv/bin/python benchmarks/retrieval_transfer.py [--n 2000] [--labels-per-class 10]
      [--strategies random,best-matches,query-balanced-image,class-balanced]
      [--clip-encoder open_clip:MODEL/TAG]   # adds query-balanced-text (needs that model's weights on disk)
      [--teacher-embeddings query-balanced-image]   # adds rows curated on the finetuned teacher's embeddings
      [--seeds 0,1,2]                        # one OUT/seed<S>/ per seed, summary.md = mean ± std
      [--set KEY=VALUE ...]                  # run overrides, e.g. distill.train.epochs=1 for a smoke test
      [--cap fashion-mnist=8000 --pool data/pool-demo-fm8k --embeddings data/emb-demo-fm8k-lite2]   # another mix
The pool (`--pool`, built with `taskdistill pool build-demo` when missing) and its embeddings (`--embeddings`,
encoder tf_efficientnet_lite2 with packaged ImageNet weights at 64 px) are reused across invocations;
finished runs are resumed, not retrained, and rows already in a seed's summary.json are kept (`--force` starts
over). Each seed writes OUT/seed<S>/summary.{json,md} and its manifests; OUT/summary.{json,md} cover the seeds of
the latest call (run the seeds in parallel, one process each, then once more with all of them for the table).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from taskdistill.atomic import write_json, write_text
from taskdistill.config import RunConfig, load_config
from taskdistill.pipelines.run import run
from taskdistill.report.sweep_report import mean_std
from taskdistill.retrieval.demo_pool import DEFAULT_CAPS, SOURCES, build_demo_pool, parse_caps
from taskdistill.retrieval.embed import EncoderSpec, embed_pool
from taskdistill.retrieval.pool import open_pool
from taskdistill.retrieval.transfer_set import CurateOptions, curate_transfer_set, split_for_curation

ENCODER = EncoderSpec(name="tf_efficientnet_lite2", pretrained=True, input_size=64)
TASK_SOURCE = "fashion-mnist"


def ensure_pool(path: Path, caps: dict[str, int]) -> None:
    """Build the demo pool at `path` with per-source `caps` (the rest: the demo pool's defaults) when missing.

    An existing pool must have been built with exactly those caps, so a pool built under older defaults
    is never reused by mistake.
    """
    want = {name: caps.get(name, DEFAULT_CAPS[name]) for name in SOURCES}
    meta = path / "pool.json"
    if meta.is_file():
        have = json.loads(meta.read_text()).get("caps", {})
        wrong = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if wrong:
            raise SystemExit(f"{path} was built with other caps ({', '.join(f'{k}: {a} not {b}' for k, (a, b) in wrong.items())}); "
                             f"rebuild it (`taskdistill pool build-demo --out {path} --force`, then delete its embeddings) "
                             f"or name another --pool and --embeddings for these caps")
        return
    print(f"building the demo pool in {path} ...")
    build_demo_pool(path, caps=caps)


def ensure_embeddings(pool: Path, out: Path, spec: EncoderSpec) -> None:
    meta = out / "meta.json"
    if meta.is_file() and json.loads(meta.read_text()).get("complete"):
        return
    print(f"embedding {pool} with {spec.name or spec.checkpoint} into {out} ...")
    embed_pool(open_pool(pool), spec, out)


def curated(cfg: RunConfig, emb: Path, strategy: str, n: int, out: Path, force: bool) -> dict[str, Any]:
    """Curate (or reuse) the manifest of one strategy for the run's labeled split; returns its summary."""
    summary_path = out / "summary.json"
    if summary_path.is_file() and not force:
        return json.loads(summary_path.read_text())
    labeled, guard = split_for_curation(cfg)
    opts = CurateOptions(strategy=strategy, n=n, seed=cfg.seed, task_source=TASK_SOURCE)
    return curate_transfer_set(emb, labeled, guard, opts, out)


def top1(rows: list[dict[str, Any]], stage: str) -> float | None:
    return next((100 * r["test"]["top1"] for r in rows if r["stage"] == stage), None)


Job = tuple[str, str, Path | None]  # (row name, strategy, embeddings folder; None: this seed's finetuned teacher)
TEACHER_EMB = "-teacher-emb"  # row-name suffix of a strategy curated on the finetuned teacher's embeddings


def run_seed(args: argparse.Namespace, seed: int, jobs: list[Job], out: Path) -> dict[str, Any]:
    """Oracle + every strategy for one seed into `out`; rows already in its summary.json are kept unless --force."""
    summary_path = out / "summary.json"
    prev: dict[str, dict[str, Any]] = {}
    if summary_path.is_file() and not args.force:
        old = json.loads(summary_path.read_text())
        if old["meta"]["n"] == args.n:
            prev = {r["name"]: r for r in old["results"]}
            meta = old["meta"]
    if set(prev) >= {"oracle", *(name for name, _, _ in jobs)}:
        return {"meta": meta, "results": [prev["oracle"]] + [prev[name] for name, _, _ in jobs]}

    def config(name: str, source: str, methods: str) -> RunConfig:
        return load_config(RunConfig, None, [
            f"seed={seed}", f"name={name}", f"output_dir={out / 'runs'}",
            f"data.labels_per_class={args.labels_per_class}", f"distill.transfer.source={source}",
            f"distill.transfer.max_images={args.n}", f"run.methods={methods}", *args.overrides])

    mode = "force" if args.force else "resume"
    t = time.perf_counter()
    oracle = run(config("oracle", "unlabeled", "[task-oriented,scratch]"), mode=mode)
    teacher_ckpt = str(oracle.path / "checkpoints" / "teacher")
    results = [{"name": "oracle", "transfer_set": "oracle (task's unlabeled images)", "precision": 1.0,
                "sources": {TASK_SOURCE: args.n}, "leakage_dropped": None,
                "distilled_top1": top1(oracle.rows, "student_distilled"), "student_top1": top1(oracle.rows, "student"),
                "seconds": round(time.perf_counter() - t, 1)}]
    for name, strategy, emb_dir in jobs:
        if name in prev:
            results.append(prev[name])
            continue
        t = time.perf_counter()
        if emb_dir is None:  # the pool embedded by this seed's finetuned teacher (pre-logits features)
            emb_dir = Path(args.embeddings).parent / f"{Path(args.embeddings).name}-{out.parent.name}-{out.name}-teacher"
            ensure_embeddings(Path(args.pool), emb_dir, EncoderSpec(name=None, checkpoint=teacher_ckpt))
        manifest_dir = out / "manifests" / name
        summary = curated(config(name, "unlabeled", "[task-oriented]"), emb_dir, strategy, args.n, manifest_dir, args.force)
        cfg = config(name, str((manifest_dir / "manifest.csv").resolve()), "[task-oriented]")
        done = run(cfg, mode=mode, only=("student_distilled", "student"), given={"teacher": teacher_ckpt})
        label = f"{strategy} (finetuned teacher's embeddings)" if name.endswith(TEACHER_EMB) else name
        results.append({"name": name, "transfer_set": label, "precision": summary["precision"],
                        "sources": summary["sources"], "n_selected": summary["n_selected"],
                        "leakage_dropped": summary["leakage"]["dropped"],
                        "distilled_top1": top1(done.rows, "student_distilled"), "student_top1": top1(done.rows, "student"),
                        "seconds": round(time.perf_counter() - t, 1)})
        print(json.dumps(results[-1]))
    meta = {"n": args.n, "labels_per_class": args.labels_per_class, "seed": seed, "overrides": args.overrides,
            "pool": str(args.pool), "pool_caps": json.loads((Path(args.pool) / "pool.json").read_text()).get("caps"),
            "teacher_top1": top1(oracle.rows, "teacher"), "scratch_top1": top1(oracle.rows, "scratch")}
    asked = {r["name"] for r in results}
    kept = {"meta": meta, "results": results + [r for name, r in prev.items() if name not in asked]}
    write_json(summary_path, kept)  # rows of earlier calls that this one did not ask for stay on disk
    write_text(out / "summary.md", "\n".join(seed_table(kept)) + "\n")
    return {"meta": meta, "results": results}


def seed_table(done: dict[str, Any]) -> list[str]:
    """One seed's rows: precision, sources, leakage drops and the two student accuracies."""
    meta = done["meta"]
    lines = [f"# Seed {meta['seed']}: Fashion-MNIST, {meta['labels_per_class']} labels/class, N = {meta['n']}", "",
             f"teacher (finetuned) top-1: {meta['teacher_top1']:.2f}; student from scratch: "
             f"{meta['scratch_top1'] or float('nan'):.2f}. Pool: {meta['pool']} (caps {meta['pool_caps']}).", "",
             "| transfer set | precision | sources | leakage drops | distilled top-1 | transferred top-1 |",
             "|---|---|---|---|---|---|"]
    for r in done["results"]:
        src = ", ".join(f"{k} {v}" for k, v in r["sources"].items())
        drops = "" if r["leakage_dropped"] is None else str(r["leakage_dropped"])
        lines.append(f"| {r['transfer_set']} | {r['precision']:.3f} | {src} | {drops} | {r['distilled_top1']:.2f} | "
                     f"{r['student_top1']:.2f} |")
    return lines


def mean_pm_std(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"


def across_seeds(per_seed: list[dict[str, Any]]) -> list[str]:
    """Mean ± std over seeds per transfer set, with the per-seed deltas against the oracle and against random."""
    seeds = [d["meta"]["seed"] for d in per_seed]
    by_name = {r["name"]: [] for r in per_seed[0]["results"]}
    for d in per_seed:
        for r in d["results"]:
            by_name[r["name"]].append(r)
    lines = [f"# Retrieval-augmented transfer sets over seeds {', '.join(map(str, seeds))}", "",
             f"Fashion-MNIST, {per_seed[0]['meta']['labels_per_class']} labels/class, N = {per_seed[0]['meta']['n']}; "
             f"pool {per_seed[0]['meta']['pool']}; teacher (finetuned) "
             f"{mean_pm_std([d['meta']['teacher_top1'] for d in per_seed])}. Deltas are transferred top-1, "
             f"mean over seeds, then each seed's value.", "",
             "| transfer set | precision | distilled top-1 | transferred top-1 | vs oracle | vs random |",
             "|---|---|---|---|---|---|"]

    def delta(rows: list[dict[str, Any]], ref: str) -> str:
        if ref not in by_name:
            return ""
        d = [r["student_top1"] - o["student_top1"] for r, o in zip(rows, by_name[ref], strict=True)]
        return f"{np.mean(d):+.2f} ({', '.join(f'{x:+.2f}' for x in d)})"

    for rows in by_name.values():
        lines.append(f"| {rows[0]['transfer_set']} | {np.mean([r['precision'] for r in rows]):.3f} | "
                     f"{mean_pm_std([r['distilled_top1'] for r in rows])} | {mean_pm_std([r['student_top1'] for r in rows])} | "
                     f"{delta(rows, 'oracle')} | {delta(rows, 'random')} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", default="data/pool-demo")
    ap.add_argument("--embeddings", default="data/emb-demo-lite2")
    ap.add_argument("--cap", action="append", default=[], metavar="SOURCE=N",
                    help="images per pool source when the pool is built (default: the demo pool's caps)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--labels-per-class", type=int, default=10)
    ap.add_argument("--strategies", default="random,best-matches,query-balanced-image,class-balanced")
    ap.add_argument("--clip-encoder", default=None, help="open_clip:MODEL/TAG for query-balanced-text")
    ap.add_argument("--teacher-embeddings", default="", metavar="STRATEGIES",
                    help="also curate with these strategies on the pool embedded by each seed's finetuned teacher")
    ap.add_argument("--seeds", default="0", help="comma-separated; each seed writes OUT/seed<S>/")
    ap.add_argument("--out", default="benchmarks/results/retrieval_transfer")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--force", action="store_true", help="curate and train everything again")
    args = ap.parse_args()
    out = Path(args.out)
    pool, emb = Path(args.pool), Path(args.embeddings)
    ensure_pool(pool, parse_caps(args.cap))
    ensure_embeddings(pool, emb, ENCODER)
    jobs: list[Job] = [(s.strip(), s.strip(), emb) for s in args.strategies.split(",") if s.strip()]
    if args.clip_encoder:
        clip_emb = emb.parent / f"{emb.name}-clip"
        ensure_embeddings(pool, clip_emb, EncoderSpec(name=args.clip_encoder, pretrained=True))
        jobs.append(("query-balanced-text", "query-balanced-text", clip_emb))
    jobs += [(s.strip() + TEACHER_EMB, s.strip(), None)
             for s in args.teacher_embeddings.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    per_seed = [run_seed(args, seed, jobs, out / f"seed{seed}") for seed in seeds]
    lines = across_seeds(per_seed)
    for d in per_seed:
        lines += [""] + ["#" + line if line.startswith("# ") else line for line in seed_table(d)]
    write_json(out / "summary.json", {"seeds": seeds, "per_seed": per_seed})
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
