"""How `fit` runs a stage on its device: precision, compilation, memory format, prefetching, mid-stage
checkpoints and logging. `loop_options(cfg, stage, stage_dir)` builds them from a run's config sections
`execution` and `log`; the defaults of `LoopOptions` reproduce the loop as it was (fp32, no files)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from taskdistill.config.schema import RunConfig
    from taskdistill.engine.loop import Schedule

CHECKPOINT_FILE = "train_state.pt"
SCALARS_FILE = "scalars.csv"
TENSORBOARD_DIR = "tensorboard"


@dataclass(frozen=True)
class LoopOptions:
    """Execution settings of one `fit` call (see docs/gpu.md)."""

    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"  # auto: bf16 on a CUDA GPU that supports it, else fp32
    compile: bool = False  # torch.compile the task's trained modules for this stage
    channels_last: bool | None = None  # None: on CUDA only
    checkpoint_path: Path | None = None  # mid-stage checkpoint file of this stage; None: none written
    checkpoint_minutes: float = 10.0  # wall-clock minutes between mid-stage checkpoints (checked at log points)
    checkpoint_every_steps: int | None = None  # also (or instead) every this many steps; for tests and schedulers
    resume: bool = True  # continue from checkpoint_path when it exists and matches; False: start the stage over
    log_path: Path | None = None  # per-step/epoch scalar CSV of this stage (always written when set)
    tensorboard_dir: Path | None = None  # TensorBoard event files when set
    log_every_steps: int = 50  # host reads of loss/metrics (and the finite-loss check) every N steps
    progress_seconds: float = 30.0  # when stderr is not a TTY: a progress line every N s (images/s, ETA)
    prefetch: int = 2  # batches built ahead in a background thread (0: on the main thread between steps)

    def __post_init__(self) -> None:
        if self.log_every_steps < 1:
            raise ValueError(f"log_every_steps must be >= 1, got {self.log_every_steps}")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            raise ValueError(f"checkpoint_every_steps must be >= 1 or None, got {self.checkpoint_every_steps}")
        if self.checkpoint_minutes < 0 or self.prefetch < 0:
            raise ValueError("checkpoint_minutes and prefetch must be >= 0")


def loop_options(cfg: RunConfig, stage: str, stage_dir: Path | None) -> LoopOptions:
    """The options of stage `stage` from `cfg.execution` and `cfg.log`. Files go in `stage_dir`
    (`train_state.pt`, `scalars.csv`, `tensorboard/`); `stage_dir=None` writes none."""
    if not stage:
        raise ValueError("loop_options needs the stage's name")
    ex, log = cfg.execution, cfg.log
    checkpoint = None
    if stage_dir is not None and ex.checkpoint_minutes > 0:
        checkpoint = Path(stage_dir) / CHECKPOINT_FILE
    return LoopOptions(
        precision=ex.precision, compile=ex.compile, channels_last=ex.channels_last, checkpoint_path=checkpoint,
        checkpoint_minutes=ex.checkpoint_minutes if ex.checkpoint_minutes > 0 else 10.0,
        log_path=Path(stage_dir) / SCALARS_FILE if stage_dir is not None else None,
        tensorboard_dir=Path(stage_dir) / TENSORBOARD_DIR if stage_dir is not None and log.tensorboard else None,
        log_every_steps=log.every_steps, progress_seconds=log.progress_seconds, prefetch=ex.prefetch)


def scaled_schedule(schedule: Schedule, batch_scale: float = 1.0,
                    rule: Literal["linear", "sqrt", "none"] = "linear") -> Schedule:
    """`schedule` with its batch size times `batch_scale` (rounded, at least 1) and its learning rate scaled by
    `rule` on the factor actually applied: linear (Goyal et al., 2017) for SGD-like scaling, sqrt for Adam-like
    (Malladi et al., 2022), none to keep it. `batch_scale=1` returns `schedule` unchanged."""
    if batch_scale == 1.0:
        return schedule
    batch = max(1, round(schedule.batch_size * batch_scale))
    factor = batch / schedule.batch_size
    lr = schedule.lr * (factor if rule == "linear" else math.sqrt(factor) if rule == "sqrt" else 1.0)
    return replace(schedule, batch_size=batch, lr=lr)
