"""`taskdistill` command line: one module per verb, registered here."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from taskdistill.errors import TaskDistillError
from taskdistill.version import __version__

# Verbs that split their work over the processes of `torchrun` (docs/distributed.md).
DISTRIBUTED_VERBS = ("run", "teacher-finetune", "distill", "finetune", "evaluate", "sweep", "embed")


def build_parser() -> argparse.ArgumentParser:
    from taskdistill.cli import (
        benchmark_cmd,
        cache_cmd,
        config_cmd,
        export_cmd,
        models_cmd,
        pool_cmd,
        predict_cmd,
        prepare_cmd,
        run_cmd,
        stage_cmds,
        sweep_cmd,
    )

    parser = argparse.ArgumentParser(prog="taskdistill", description=(
        "Turn a large pretrained vision model into a small task-specific one from a few labels."))
    parser.add_argument("--version", action="version", version=f"taskdistill {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (run_cmd, prepare_cmd, stage_cmds, sweep_cmd, predict_cmd, export_cmd, benchmark_cmd, models_cmd,
                   config_cmd, pool_cmd, cache_cmd):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from taskdistill import distributed

    if distributed.launched_by_torchrun() and args.verb not in DISTRIBUTED_VERBS:
        print(f"taskdistill: error: `{args.verb}` runs in one process; launch it without torchrun (verbs that "
              f"split their work over processes: {', '.join(DISTRIBUTED_VERBS)})", file=sys.stderr)
        return 2
    try:
        # Under `torchrun --nproc_per_node N taskdistill ...` every process runs the verb in one process group;
        # rank 0 prints the results (the others' stdout is dropped; errors still reach stderr).
        with distributed.session() as here, open(os.devnull, "w") as quiet:
            with contextlib.redirect_stdout(quiet if not here.is_main else sys.stdout):
                return int(args.func(args) or 0)
    except TaskDistillError as e:
        print(f"taskdistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("taskdistill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
