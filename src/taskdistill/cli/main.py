"""`taskdistill` command line: one module per verb, registered here."""

from __future__ import annotations

import argparse
import sys

from taskdistill.errors import TaskDistillError
from taskdistill.version import __version__


def build_parser() -> argparse.ArgumentParser:
    from taskdistill.cli import config_cmd, models_cmd, pool_cmd, predict_cmd, run_cmd, stage_cmds, sweep_cmd

    parser = argparse.ArgumentParser(prog="taskdistill", description=(
        "Turn a large pretrained vision model into a small task-specific one from a few labels."))
    parser.add_argument("--version", action="version", version=f"taskdistill {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (run_cmd, stage_cmds, sweep_cmd, predict_cmd, models_cmd, config_cmd, pool_cmd):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TaskDistillError as e:
        print(f"taskdistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("taskdistill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
