"""`taskdistill run [CONFIG] [--set k=v ...] [--methods ...]`: the methods of one grid cell into a run folder."""

from __future__ import annotations

import argparse

from taskdistill.cli.common import add_config_args, add_run_mode_args, config_from_args, run_mode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="teacher finetune -> distill -> student finetune (+ the other methods of "
                                   "run.methods), with a report")
    add_config_args(p)
    add_run_mode_args(p)
    p.add_argument("--methods", default=None,
                   help="comma-separated methods to run (default: the config's run.methods, "
                        "task-oriented,scratch); the same recipes as `taskdistill sweep`")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from taskdistill.pipelines.run import run as run_cell

    cfg = config_from_args(args)
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    result = run_cell(cfg, run_mode(args), methods=methods)
    print(f"\nrun folder: {result.path}")
    return 0
