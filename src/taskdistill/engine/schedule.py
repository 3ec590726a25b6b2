"""A stage's optimizer schedule from its config section (`OptimConfig` -> the loop's `Schedule`), and the
config with every stage's batch scaled (`execution.batch_scale`, learning rates by `execution.lr_scaling`)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from taskdistill.config.schema import OptimConfig, RunConfig
from taskdistill.engine.loop import Schedule
from taskdistill.engine.loop_options import scaled_schedule

T = TypeVar("T")


def schedule_of(opt: OptimConfig) -> Schedule:
    return Schedule(epochs=opt.epochs, batch_size=opt.batch_size, lr=opt.lr, weight_decay=opt.weight_decay,
                    optimizer=opt.optimizer, warmup_epochs=opt.warmup_epochs, min_steps=opt.min_steps,
                    clip_grad_norm=opt.clip_grad_norm)


def _scale_all(node: T, scale: float, rule: Any) -> T:
    if isinstance(node, OptimConfig):
        s = scaled_schedule(schedule_of(node), scale, rule)
        return dataclasses.replace(node, batch_size=s.batch_size, lr=s.lr)  # type: ignore[return-value]
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        changes = {f.name: _scale_all(getattr(node, f.name), scale, rule) for f in dataclasses.fields(node)
                   if dataclasses.is_dataclass(getattr(node, f.name))}
        return dataclasses.replace(node, **changes) if changes else node  # type: ignore[return-value]
    return node


def scaled_config(cfg: RunConfig) -> RunConfig:
    """`cfg` with every stage's batch size times `execution.batch_scale` and its learning rate scaled by
    `execution.lr_scaling` (linear, sqrt or none); `cfg` itself when the scale is 1."""
    ex = cfg.execution
    return cfg if ex.batch_scale == 1.0 else _scale_all(cfg, ex.batch_scale, ex.lr_scaling)
