"""`taskdistill prepare [CONFIG]`: decode a run's labeled, transfer and test images into image stores, no training."""

from __future__ import annotations

import argparse
import json
import time

from taskdistill.cli.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="build the image stores a config's run reads (decode once, no training)")
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="print the stores as JSON")
    p.set_defaults(func=prepare)


def prepare(args: argparse.Namespace) -> int:
    from taskdistill.data.image_store import human_bytes, store_summary
    from taskdistill.data.stored_sets import stores_of
    from taskdistill.kinds import kind_of

    cfg = config_from_args(args)
    start = time.perf_counter()
    data = kind_of(cfg).prepare(cfg)
    counts = data.summary()
    stores = stores_of(data.labeled, data.val, data.transfer, data.test)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({"sets": counts, "seconds": round(seconds, 2), "stores": [store_summary(s) for s in stores]},
                         indent=2))
        return 0
    print(f"prepared in {seconds:.1f} s: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if not stores:
        print(f"no image store: dataset '{cfg.data.dataset}' is read from its own files in memory")
    for s in stores:
        print(f"  {s.description}: {s.num_images:,} images {s.shape[1]}x{s.shape[2]}x{s.shape[3]}, "
              f"{human_bytes(s.disk_bytes())}, {len(s.bad)} unreadable -> {s.path}")
    return 0
