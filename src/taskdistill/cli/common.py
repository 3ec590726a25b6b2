"""Argument helpers shared by the verbs: config file, --set overrides, run-folder mode."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import Any

from taskdistill.config.load import load_config
from taskdistill.config.schema import RunConfig
from taskdistill.errors import ConfigError
from taskdistill.pipelines.run_folder import Mode


def shipped_configs() -> dict[str, Path]:
    """Config files that ship inside the package, by name (`default`, ...)."""
    folder = resources.files("taskdistill") / "configs"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def add_config_args(p: argparse.ArgumentParser, config_required: bool = False) -> None:
    p.add_argument("config", nargs=None if config_required else "?", default=None,
                   help="YAML config file, or the name of a shipped one (default: the built-in default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set distill.temperature=4 (repeatable)")
    p.add_argument("--on-bad-image", choices=["fail", "skip"], default=None,
                   help="what to do with unreadable images (same as --set data.on_bad_image=...)")


def add_run_mode_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an existing run folder, keeping finished stages")
    g.add_argument("--force", action="store_true", help="replace an existing run folder")


def run_mode(args: argparse.Namespace) -> Mode:
    return "resume" if args.resume else "force" if args.force else "new"


def config_from_args(args: argparse.Namespace) -> RunConfig:
    overrides = list(args.overrides)
    if getattr(args, "on_bad_image", None):
        overrides.append(f"data.on_bad_image={args.on_bad_image}")
    path = args.config
    if path is not None and not Path(path).exists():
        shipped = shipped_configs()
        if path in shipped:
            path = shipped[path]
        else:
            raise ConfigError(f"config '{path}' is neither a file nor a shipped config ({', '.join(sorted(shipped))})")
    return load_config(RunConfig, path, overrides)


def config_for_checkpoint(args: argparse.Namespace, meta: dict[str, Any]) -> RunConfig:
    """The config named on the command line; without one, the config recorded in the checkpoint (the data it
    was trained on), with the command line's --set overrides applied."""
    if args.config is None and meta.get("config"):
        import copy

        from taskdistill.config.load import apply_overrides, from_stored

        overrides = list(args.overrides)
        if getattr(args, "on_bad_image", None):
            overrides.append(f"data.on_bad_image={args.on_bad_image}")
        return from_stored(RunConfig, apply_overrides(copy.deepcopy(meta["config"]), overrides))
    return config_from_args(args)
