"""Web-scale retrieval (issue 22): query-balanced curation of 100,000 images from a synthetic clip-retrieval pool.

For each pool size (default 10^6 and 10^7 rows of 512-d float16 unit vectors, `retrieval/synthetic_pool.py`:
10 classes x 50 queries, 240 task images planted around each query, 5 % near-copies, 2,000 guard images each
with a copy hidden in the pool), each step in a child process whose peak RSS is read with os.wait4:
    generate   the pool, cached under --cache (data/webpool/, gitignored); not part of the measured curation
    approx     build the on-disk IVF-PQ index from scratch (one streaming pass) + curate N images
    reuse      curate again with the saved index (what a second curation of the same pool costs)
    exact      the same curation with an exact streaming scan instead of the index (the reference)
Recall = share of the exact curation's picks that the approximate one also picked; the planted figures say how
many picks are task images, and that no leaked guard copy and no near-copy pair got in.

    .venv/bin/python benchmarks/web_scale.py --sizes 1000000 10000000 --out benchmarks/results/web_scale
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def _child(args: argparse.Namespace) -> None:
    from taskdistill.retrieval.clip_layout import ClipPool
    from taskdistill.retrieval.ondisk_index import build_ondisk_index, ondisk_params
    from taskdistill.retrieval.picking import GuardSet, Queries
    from taskdistill.retrieval.synthetic_pool import SyntheticSpec, load_truth, write_synthetic_pool
    from taskdistill.retrieval.web_curate import curate_pool

    pool_dir = Path(args.pool)
    t0 = time.perf_counter()
    out: dict[str, object] = {"step": args.step, "load_before": os.getloadavg()}
    if args.step == "generate":
        spec = SyntheticSpec(n=args.n, dim=args.dim, classes=args.classes, queries_per_class=args.queries_per_class,
                             planted_per_query=args.planted_per_query)
        write_synthetic_pool(pool_dir, spec)
    else:
        truth = load_truth(pool_dir)
        pool = ClipPool(pool_dir)
        names = [f"q{i}" for i in range(len(truth.queries))]
        queries = Queries(truth.queries.astype(np.float32), truth.labels, names,
                          [f"class{c}" for c in range(args.classes)])
        guard = GuardSet(truth.guard.astype(np.float32), np.zeros((len(truth.guard), 1), np.float32),
                         [f"test{i}" for i in range(len(truth.guard))])
        index = None
        if args.step in ("approx", "reuse"):
            overrides = {k: getattr(args, k) for k in ("nlist", "nprobe", "m") if getattr(args, k) is not None}
            params = ondisk_params(pool.n, pool.dim, **overrides)
            t = time.perf_counter()
            index, loaded = build_ondisk_index(pool, pool_dir / "taskdistill-index", params)
            out.update(index_seconds=time.perf_counter() - t, index_loaded=loaded, params=vars(params))
        sel = curate_pool(pool, queries, args.picks, index, guard, rerank=args.rerank)
        with open(pool_dir / f"picks-{args.step}.npz", "wb") as f:
            np.savez(f, rows=sel.rows, query=sel.query, scores=sel.scores)
        out.update(picked=len(sel.rows), candidates=sel.candidates, guard_dropped=sel.guard_dropped,
                   duplicates_rejected=sel.duplicates_rejected, filled=sel.filled_from_best_matches,
                   seconds=sel.seconds)
    out.update(wall_in_child=time.perf_counter() - t0, load_after=os.getloadavg())
    Path(args.result).write_text(json.dumps(out))


def _run_child(step: str, pool: Path, n: int, args: argparse.Namespace, result: Path) -> dict:
    cmd = [sys.executable, str(HERE), "--child", step, "--pool", str(pool), "--n-pool", str(n), "--result", str(result),
           "--picks", str(args.picks), "--dim", str(args.dim), "--classes", str(args.classes),
           "--queries-per-class", str(args.queries_per_class), "--planted-per-query", str(args.planted_per_query),
           "--rerank", str(args.rerank)]
    for k in ("nlist", "nprobe", "m"):
        if getattr(args, k) is not None:
            cmd += [f"--{k}", str(getattr(args, k))]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"step {step} on {pool} failed (status {status})")
    info = json.loads(result.read_text())
    info.update(wall_s=round(wall, 1), peak_rss_gb=round(usage.ru_maxrss / 1024 ** 2, 3))
    print(f"[{n:,}] {step}: {wall:.1f} s, peak RSS {info['peak_rss_gb']} GB, load {info['load_before']} -> "
          f"{info['load_after']}", flush=True)
    return info


def _compare(pool: Path) -> dict:
    from taskdistill.retrieval.synthetic_pool import load_truth

    truth = load_truth(pool)
    a, e = np.load(pool / "picks-approx.npz")["rows"], np.load(pool / "picks-exact.npz")["rows"]
    planted = set(truth.planted_rows.tolist()) | set(truth.dup_rows.tolist())
    sa, se = set(a.tolist()), set(e.tolist())
    dup_pairs = sum(1 for r, o in zip(truth.dup_rows.tolist(), truth.dup_of.tolist(), strict=True) if r in sa and o in sa)
    return {"recall_vs_exact": round(len(sa & se) / max(1, len(se)), 4),
            "planted_share_approx": round(len(sa & planted) / max(1, len(sa)), 4),
            "planted_share_exact": round(len(se & planted) / max(1, len(se)), 4),
            "leaked_guard_copies_picked": len(sa & set(truth.leak_rows.tolist())),
            "near_copy_pairs_picked": dup_pairs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--picks", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--queries-per-class", type=int, default=50)
    ap.add_argument("--planted-per-query", type=int, default=240)
    ap.add_argument("--rerank", type=int, default=2)
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--m", type=int, default=None)
    ap.add_argument("--cache", default="data/webpool")
    ap.add_argument("--out", default="benchmarks/results/web_scale")
    ap.add_argument("--skip-exact", action="store_true",
                    help="skip the exact reference (recall then uses picks-exact.npz of an earlier run, if any)")
    ap.add_argument("--keep-index", action="store_true", help="reuse an index built by an earlier run")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--pool", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n-pool", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.step, args.n = args.child, args.n_pool
        _child(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.sizes:
        pool = Path(args.cache) / f"n{n}-d{args.dim}"
        rec: dict = {"n": n, "dim": args.dim, "picks": args.picks, "queries": args.classes * args.queries_per_class,
                     "steps": {}}
        rec["steps"]["generate"] = _run_child("generate", pool, n, args, out / f"n{n}-generate.json")
        if not args.keep_index:
            shutil.rmtree(pool / "taskdistill-index", ignore_errors=True)
        rec["steps"]["approx"] = _run_child("approx", pool, n, args, out / f"n{n}-approx.json")
        rec["steps"]["reuse"] = _run_child("reuse", pool, n, args, out / f"n{n}-reuse.json")
        if not args.skip_exact:
            rec["steps"]["exact"] = _run_child("exact", pool, n, args, out / f"n{n}-exact.json")
        if (pool / "picks-exact.npz").is_file():  # with --skip-exact: the reference picks of an earlier run
            rec["quality"] = {**_compare(pool), "exact_from_earlier_run": args.skip_exact}
        results.append(rec)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print("\n| pool | step | wall s | peak RSS GB | load (1 min) | recall vs exact | planted share |")
    print("|---|---|---|---|---|---|---|")
    for rec in results:
        q = rec.get("quality", {})
        for step, info in rec["steps"].items():
            recall = q.get("recall_vs_exact", "") if step == "approx" else ""
            share = q.get(f"planted_share_{'exact' if step == 'exact' else 'approx'}", "") if step != "generate" else ""
            print(f"| {rec['n']:,} | {step} | {info['wall_s']} | {info['peak_rss_gb']} | "
                  f"{info['load_before'][0]:.2f} -> {info['load_after'][0]:.2f} | {recall} | {share} |")


if __name__ == "__main__":
    main()
