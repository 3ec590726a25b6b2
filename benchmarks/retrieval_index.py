"""Exact vs approximate pool search: recall@k, build and query time on clustered synthetic unit vectors.

Run: .venv/bin/python benchmarks/retrieval_index.py [--n 1000000] [--dim 256] [--queries 1000]
     [--kinds auto] [--out benchmarks/results/retrieval_index]
`--kinds` is a comma list of index kinds to compare with the exact `flat` index; `auto` is what the size rule
(`taskdistill.retrieval.index.choose_index`) picks for `--n`. Each kind is also swept over its search knob
(nprobe for IVF, efSearch for HNSW). Writes `results.json` and `results.md` into `--out`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from taskdistill.atomic import write_json, write_text
from taskdistill.retrieval.index import VectorIndex, build_index, choose_index


def clustered_vectors(n: int, dim: int, clusters: int, spread: float, seed: int, chunk: int = 100_000) -> np.ndarray:
    """`[n, dim]` float32 unit vectors around `clusters` random centres (seeded, built in chunks)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for c0 in range(0, n, chunk):
        m = min(chunk, n - c0)
        x = centres[rng.integers(0, clusters, m)] + spread * rng.standard_normal((m, dim)).astype(np.float32)
        out[c0:c0 + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(e.tolist())) / k for a, e in zip(approx, exact, strict=True)]))


def timed_search(index: VectorIndex, q: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    _, rows = index.search(q, k)
    return rows, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--spread", type=float, default=1.0,
                    help="noise around each centre per dimension (1.0: cosine ~0.5 within a cluster)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default="auto", help="comma list: auto, hnsw, ivf-flat, ivf-pq")
    ap.add_argument("--out", default="benchmarks/results/retrieval_index")
    ap.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: all CPUs)")
    args = ap.parse_args()
    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)

    t = time.perf_counter()
    both = clustered_vectors(args.n + args.queries, args.dim, args.clusters, args.spread, args.seed)
    x, q = both[:args.n], both[args.n:]  # queries: same distribution, not in the index
    print(f"data: {args.n} x {args.dim} ({time.perf_counter() - t:.1f} s)")

    t = time.perf_counter()
    flat = build_index(x, "flat")
    flat_build = time.perf_counter() - t
    exact, flat_query = timed_search(flat, q, args.k)
    rows = [{"kind": "flat", "params": {}, "build_s": round(flat_build, 2), "query_s": round(flat_query, 3),
             "ms_per_query": round(1000 * flat_query / len(q), 3), "recall": 1.0}]
    print(f"flat: build {flat_build:.1f} s, {len(q)} queries {flat_query:.2f} s")
    del flat

    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        choice = choose_index(args.n, args.dim, kind)
        t = time.perf_counter()
        index = build_index(x, choice.kind, seed=args.seed)
        build_s = time.perf_counter() - t
        knob = "nprobe" if choice.kind.startswith("ivf") else "ef_search" if choice.kind == "hnsw" else None
        default = choice.params.get(knob) if knob else None
        sweep = sorted({default, *(default * f for f in (0.25, 0.5, 2, 4))}) if knob else [None]
        for value in sweep:
            if knob is not None:
                value = int(max(1, min(value, choice.params.get("nlist", 10 ** 9))))
                index.choice.params[knob] = value
                index.apply_search_params()
            found, query_s = timed_search(index, q, args.k)
            row = {"kind": choice.kind, "asked": kind, "params": dict(index.choice.params), "build_s": round(build_s, 2),
                   "query_s": round(query_s, 3), "ms_per_query": round(1000 * query_s / len(q), 3),
                   "recall": round(recall(found, exact), 4), "rule_default": value == default}
            rows.append(row)
            print(f"{choice.kind} {knob}={value}: recall@{args.k} {row['recall']:.4f}, query {query_s:.2f} s")
        del index

    meta = {"n": args.n, "dim": args.dim, "clusters": args.clusters, "spread": args.spread, "queries": len(q),
            "k": args.k, "seed": args.seed, "threads": args.threads, "machine": platform.platform(), "cpus": len(os.sched_getaffinity(0))}
    out = Path(args.out)
    write_json(out / "results.json", {"meta": meta, "rows": rows})
    lines = [f"# Pool index: {args.n} x {args.dim} clustered unit vectors, {len(q)} queries, recall@{args.k}", "",
             f"{meta['cpus']} CPUs, {meta['machine']}. Exact = IndexFlatIP. `*` = the default search setting of that index kind (`auto` = the size rule's choice).",
             "", "| index | params | build (s) | query total (s) | ms / query | recall |", "|---|---|---|---|---|---|"]
    for r in rows:
        mark = " *" if r.get("rule_default") else ""
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"| {r['kind']}{mark} | {params} | {r['build_s']} | {r['query_s']} | {r['ms_per_query']} | "
                     f"{r['recall']:.4f} |")
    write_text(out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
