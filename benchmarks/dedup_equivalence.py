"""Same picks with the O(picks x k) deduplicator as with the quadratic one (issue 22), on a real curation.

Runs `taskdistill curate`'s code path (`curate_transfer_set`) twice on the same embedding folder and config,
once with `dedup.IndexedDeduper` (what `select` uses) and once with the quadratic `curate.Deduper`, for each
strategy, and compares the manifests row for row. `--exact-max 64` forces the k-means-cell path from the 65th
accepted image on (by default it starts after 8,192, i.e. never at the demo pool's N = 2,000).

    .venv/bin/python benchmarks/dedup_equivalence.py data/emb-demo-lite2 --n 2000 --exact-max 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    import taskdistill.retrieval.curate as curate_mod
    import taskdistill.retrieval.dedup as dedup_mod
    from taskdistill.config import RunConfig, load_config
    from taskdistill.retrieval.transfer_set import CurateOptions, curate_transfer_set, split_for_curation

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("embeddings")
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--strategies", nargs="+", default=["random", "best-matches", "query-balanced-image",
                                                         "class-balanced"])
    ap.add_argument("--exact-max", type=int, default=None)
    ap.add_argument("--task-source", default="fashion-mnist")
    args = ap.parse_args()
    if args.exact_max is not None:
        dedup_mod.EXACT_MAX = args.exact_max
    cfg = load_config(RunConfig, args.config, args.overrides)
    labeled, guard = split_for_curation(cfg)
    indexed = curate_mod.IndexedDeduper
    results = []
    for strategy in args.strategies:
        manifests, seconds = {}, {}
        for name, factory in (("indexed", indexed), ("quadratic", lambda e, r, n: curate_mod.Deduper(e, r, n))):
            curate_mod.IndexedDeduper = factory  # type: ignore[assignment,misc]
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                summary = curate_transfer_set(args.embeddings, labeled, guard,
                                              CurateOptions(strategy=strategy, n=args.n, task_source=args.task_source),
                                              tmp)
                seconds[name] = round(time.perf_counter() - t, 1)
                manifests[name] = (Path(tmp) / "manifest.csv").read_text()
                summary_of = {k: summary[k] for k in ("n_selected", "precision", "duplicates_rejected")}
        curate_mod.IndexedDeduper = indexed  # type: ignore[misc]
        same = manifests["indexed"] == manifests["quadratic"]
        results.append({"strategy": strategy, "identical_manifest": same, "seconds": seconds, **summary_of})
        print(json.dumps(results[-1]), flush=True)
    if not all(r["identical_manifest"] for r in results):
        raise SystemExit("the picks moved")


if __name__ == "__main__":
    main()
