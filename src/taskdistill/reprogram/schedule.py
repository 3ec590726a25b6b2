"""How much of the progressive distillation loss comes from the task space, step by step.

`task_weight(step, total, ...)` is the weight `w_t` of the task term; `1 - w_t` goes to the proxy
(source-class) term. It is a pure function of the step, so it is tested at chosen steps, and
`planned_steps` gives the step count `engine.loop.fit` will run, so the task can be told its horizon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from taskdistill.engine.batches import EpochSampler
from taskdistill.engine.loop import Schedule

ScheduleKind = Literal["progressive", "one-shot", "joint"]
RampShape = Literal["linear", "cosine"]
SCHEDULE_KINDS: tuple[str, ...] = ("progressive", "one-shot", "joint")
RAMP_SHAPES: tuple[str, ...] = ("linear", "cosine")


def task_weight(step: int, total: int, kind: str = "progressive", ramp_fraction: float = 0.5,
                shape: str = "linear", joint_weight: float = 0.5) -> float:
    """Weight `w` in [0, 1] of the task term at optimizer step `step` (0-based) of `total`.

    - "progressive": with `R = ceil(ramp_fraction * total)` ramp steps and `p = min(1, step / R)`,
      `w = p` ("linear") or `w = (1 - cos(pi p)) / 2` ("cosine"): 0 at step 0, 1 from step R on.
      `ramp_fraction = 0` (R = 0) gives w = 1 throughout.
    - "one-shot": w = 1 throughout (the task outputs only, no proxy term).
    - "joint": w = `joint_weight` throughout (both terms, fixed mix).
    """
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"schedule kind must be one of {SCHEDULE_KINDS}, got {kind!r}")
    if shape not in RAMP_SHAPES:
        raise ValueError(f"ramp shape must be one of {RAMP_SHAPES}, got {shape!r}")
    if not 0.0 <= ramp_fraction <= 1.0:
        raise ValueError(f"ramp_fraction must lie in [0, 1], got {ramp_fraction}")
    if not 0.0 <= joint_weight <= 1.0:
        raise ValueError(f"joint_weight must lie in [0, 1], got {joint_weight}")
    if step < 0 or total < 0:
        raise ValueError(f"step and total must be >= 0, got step {step} of {total}")
    if kind == "one-shot":
        return 1.0
    if kind == "joint":
        return float(joint_weight)
    ramp = math.ceil(ramp_fraction * total)
    if ramp <= 0:
        return 1.0
    p = min(1.0, step / ramp)
    return p if shape == "linear" else 0.5 * (1.0 - math.cos(math.pi * p))


@dataclass(frozen=True)
class WeightSchedule:
    """A configured `task_weight`: `at(step, total)` -> w_t; says which terms it ever uses."""

    kind: ScheduleKind = "progressive"
    ramp_fraction: float = 0.5
    shape: RampShape = "linear"
    joint_weight: float = 0.5

    def __post_init__(self) -> None:
        task_weight(0, 1, self.kind, self.ramp_fraction, self.shape, self.joint_weight)  # validates

    def at(self, step: int, total: int) -> float:
        return task_weight(step, total, self.kind, self.ramp_fraction, self.shape, self.joint_weight)

    @property
    def uses_proxy(self) -> bool:
        """Whether some step gives the proxy term a non-zero weight (then source outputs are needed)."""
        if self.kind == "one-shot":
            return False
        if self.kind == "joint":
            return self.joint_weight < 1.0
        return self.ramp_fraction > 0.0

    @property
    def uses_task(self) -> bool:
        """Whether some step gives the task term a non-zero weight (then target outputs are needed)."""
        return not (self.kind == "joint" and self.joint_weight == 0.0)


def planned_steps(num_items: int, schedule: Schedule, world_size: int = 1) -> int:
    """Optimizer steps `engine.loop.fit(task, source, schedule)` runs on a source of `num_items` items:
    `epochs * batches_per_epoch`, the epochs raised to reach `schedule.min_steps` (as `fit` does).
    A test checks that it equals `FitResult.steps`."""
    per_epoch = len(EpochSampler(num_items, schedule.batch_size, shuffle=True, drop_last=True,
                                 world_size=world_size))
    epochs = schedule.epochs
    if epochs > 0 and schedule.min_steps > 0:
        epochs = max(epochs, math.ceil(schedule.min_steps / per_epoch))
    return epochs * per_epoch
