"""A stage's optimizer schedule from its config section (`OptimConfig` -> the loop's `Schedule`)."""

from __future__ import annotations

from taskdistill.config.schema import OptimConfig
from taskdistill.engine.loop import Schedule


def schedule_of(opt: OptimConfig) -> Schedule:
    return Schedule(epochs=opt.epochs, batch_size=opt.batch_size, lr=opt.lr, weight_decay=opt.weight_decay,
                    optimizer=opt.optimizer, warmup_epochs=opt.warmup_epochs, min_steps=opt.min_steps)
