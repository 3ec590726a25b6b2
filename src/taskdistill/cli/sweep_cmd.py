"""`taskdistill sweep CONFIG --methods ... --budgets 1,5,10,50 --seeds 0,1,2`: the comparison grid."""

from __future__ import annotations

import argparse

from taskdistill.cli.common import add_config_args, config_from_args


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def register(sub: argparse._SubParsersAction) -> None:
    from taskdistill.pipelines.methods import METHODS

    p = sub.add_parser("sweep", help="run methods x label budgets x seeds and write a comparison report")
    add_config_args(p)
    p.add_argument("--methods", default="scratch,pretrained-finetune,task-agnostic,task-oriented,teacher-finetune",
                   help=f"comma-separated, from: {', '.join(METHODS)}")
    p.add_argument("--budgets", type=_ints, default=[1, 5, 10, 50],
                   help="labels per class, e.g. 1,5,10,50 (task: segmentation: labeled images)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--out", default=None, help="sweep folder (default: <output_dir>/sweeps/<name>)")
    p.add_argument("--force", action="store_true", help="discard finished cells and start over")
    p.set_defaults(func=sweep)


def sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from taskdistill.pipelines.sweep import run_sweep

    cfg = config_from_args(args)
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "sweeps" / cfg.name
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    run_sweep(cfg, methods, args.budgets, args.seeds, out, force=args.force)
    print(f"\nreport: {out / 'report.md'}  {out / 'report.html'}")
    return 0
