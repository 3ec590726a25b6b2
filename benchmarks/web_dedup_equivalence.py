"""The O(picks x k) deduplicator against the exact all-pairs product on a web-scale curation (issue 22).

Curates N images (query-balanced) from a synthetic pool made by `benchmarks/web_scale.py`, with its saved index,
twice: with `dedup.IndexedDeduper` as it ships, and with its exact path forced for the whole run (the very
product the quadratic `curate.Deduper` computes: each candidate against every accepted image). Prints both
timings and whether the picks are identical, in order.

    .venv/bin/python benchmarks/web_dedup_equivalence.py data/webpool/n1000000-d512 --n 100000
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    import taskdistill.retrieval.dedup as dedup_mod
    from taskdistill.retrieval.clip_layout import ClipPool
    from taskdistill.retrieval.ondisk_index import OnDiskIndex
    from taskdistill.retrieval.picking import GuardSet, Queries
    from taskdistill.retrieval.synthetic_pool import load_truth
    from taskdistill.retrieval.web_curate import curate_pool

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pool")
    ap.add_argument("--n", type=int, default=100_000)
    args = ap.parse_args()
    truth, pool = load_truth(args.pool), ClipPool(args.pool)
    index = OnDiskIndex.load(os.path.join(args.pool, "taskdistill-index"))
    q = Queries(truth.queries, truth.labels, [f"q{i}" for i in range(len(truth.queries))],
                [f"c{c}" for c in range(int(truth.labels.max()) + 1)])
    g = GuardSet(truth.guard, np.zeros((len(truth.guard), 1), np.float32), [f"t{i}" for i in range(len(truth.guard))])
    out = {}
    for name, exact_max in (("indexed", dedup_mod.EXACT_MAX), ("exact_product", 10 ** 12)):
        dedup_mod.EXACT_MAX = exact_max
        t, load = time.perf_counter(), os.getloadavg()[0]
        sel = curate_pool(pool, q, args.n, index, g, progress=False)
        out[name] = {"rows": sel.rows, "select_s": round(sel.seconds["select"], 1),
                     "total_s": round(time.perf_counter() - t, 1), "rejected": sel.duplicates_rejected, "load": load}
    same = bool(np.array_equal(out["indexed"]["rows"], out["exact_product"]["rows"]))
    print(json.dumps({"identical_picks_in_order": same, **{k: {kk: vv for kk, vv in v.items() if kk != "rows"}
                                                           for k, v in out.items()}}, indent=2))


if __name__ == "__main__":
    main()
