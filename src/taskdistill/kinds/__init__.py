"""Task kinds (classification, segmentation): `kind_of(cfg)` and `kind_of_checkpoint(meta)` are the only
places that read the kind's name; everything else calls the `TaskKind` they return."""

from __future__ import annotations

from typing import Any

from taskdistill.config.schema import RunConfig
from taskdistill.errors import CheckpointError, ConfigError
from taskdistill.kinds.base import TaskKind
from taskdistill.kinds.classification import Classification
from taskdistill.kinds.segmentation import Segmentation

KINDS: dict[str, TaskKind] = {k.name: k for k in (Classification(), Segmentation())}


def kind_named(name: str) -> TaskKind:
    if name not in KINDS:
        raise ConfigError(f"unknown task '{name}'; known: {', '.join(KINDS)}")
    return KINDS[name]


def kind_of(cfg: RunConfig) -> TaskKind:
    """The task kind of a config (`task:`)."""
    return kind_named(cfg.task)


def kind_of_checkpoint(meta: dict[str, Any], cfg: RunConfig | None = None) -> TaskKind:
    """The task kind a checkpoint was trained for; with `cfg`, a mismatch is an error naming the fix."""
    name = meta.get("task", "classification")  # checkpoints before the field were classification ones
    if name not in KINDS:
        raise CheckpointError(f"the checkpoint was trained for task '{name}', which this version does not know")
    if cfg is not None and cfg.task != name:
        raise ConfigError(f"the checkpoint is a {name} checkpoint but the config says task: {cfg.task}; give a "
                          f"{name} config (or --set task={name} with matching data settings)")
    return KINDS[name]


__all__ = ["KINDS", "Classification", "Segmentation", "TaskKind", "kind_named", "kind_of", "kind_of_checkpoint"]
