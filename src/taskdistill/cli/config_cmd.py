"""`taskdistill config show [CONFIG] [--set ...]` and `taskdistill config list`."""

from __future__ import annotations

import argparse

from taskdistill.cli.common import add_config_args, config_from_args, shipped_configs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the merged config, or list the shipped configs")
    verbs = p.add_subparsers(dest="config_verb", required=True, metavar="show|list")
    show = verbs.add_parser("show", help="print the merged config (defaults <- file <- --set) as YAML")
    add_config_args(show)
    show.set_defaults(func=_show)
    lst = verbs.add_parser("list", help="list the configs that ship with taskdistill")
    lst.set_defaults(func=_list)


def _show(args: argparse.Namespace) -> int:
    from taskdistill.config.load import dump_yaml

    print(dump_yaml(config_from_args(args)), end="")
    return 0


def _list(args: argparse.Namespace) -> int:
    for name, path in sorted(shipped_configs().items()):
        print(f"{name}  ({path})")
    return 0
