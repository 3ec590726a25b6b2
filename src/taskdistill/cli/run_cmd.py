"""`taskdistill run [CONFIG] [--set k=v ...]`: every stage of task-oriented transfer into a run folder."""

from __future__ import annotations

import argparse

from taskdistill.cli.common import add_config_args, add_run_mode_args, config_from_args, run_mode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="teacher finetune -> distill -> student finetune (+ baselines), with a report")
    add_config_args(p)
    add_run_mode_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from taskdistill.pipelines.task_oriented import run_task_oriented

    cfg = config_from_args(args)
    if cfg.task == "segmentation":
        from taskdistill.pipelines.seg_run import run_segmentation

        result = run_segmentation(cfg, run_mode(args))
    else:
        result = run_task_oriented(cfg, run_mode(args))
    print(f"\nrun folder: {result.path}")
    return 0
