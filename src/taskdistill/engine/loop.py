"""The one training loop. Every stage and method runs through `fit`; they differ only in the task.

Under a process group (torchrun) the same loop runs on every rank: the task's step goes through
DistributedDataParallel (`engine.ddp`), each rank takes its part of every global batch of
`schedule.batch_size` rows, and the steps, learning rates and (for mean losses) gradients are the ones a
single process would take on the same data.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from taskdistill import distributed
from taskdistill.distributed import part_start, rank_part
from taskdistill.engine.batches import (
    ROWS_KEY,
    Batch,
    BatchSource,
    EpochSampler,
    StreamSource,
)
from taskdistill.engine.ddp import DDPTask, trained_modules
from taskdistill.engine.loop_options import LoopOptions, loop_options, scaled_schedule
from taskdistill.engine.precision import (
    autocast,
    configure_device,
    grad_scaler,
    resolve_precision,
    use_channels_last,
)
from taskdistill.engine.prefetch import ahead, pin, to_device
from taskdistill.engine.scalar_log import ScalarLog
from taskdistill.engine.step_scalars import EpochMeans, StepScalars
from taskdistill.engine.train_state import Position, TrainState
from taskdistill.errors import ConfigError
from taskdistill.progress import ProgressLine

__all__ = ["FitResult", "LoopOptions", "Schedule", "Task", "build_optimizer", "fit", "loop_options", "lr_at",
           "scaled_schedule"]


class Task(Protocol):
    """What a method hands the loop: a loss over a batch, and the parameters it trains.

    `__call__(batch)` returns `{"loss": scalar tensor, **parts}`, plus `"loss_weight"` (the number of terms
    the loss averages) when that is not the batch's row count; `train(mode)` sets module modes (a frozen
    teacher stays in eval mode whatever `mode` is).

    Optional: `prepare(batch) -> batch`, deterministic host-side work run ahead in the prefetch thread (view
    replay, cached-target gathers); `state_dict()` / `load_state_dict(state)`, JSON-able state that changes
    during a stage (augmentation generators, step counters), saved in mid-stage checkpoints; `modules()`, the
    modules it trains when they are not its attributes (DDP, checkpoints, compile).
    """

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]: ...

    def trainable_parameters(self) -> Iterable[nn.Parameter]: ...

    def train(self, mode: bool = True) -> None: ...


@dataclass(frozen=True)
class Schedule:
    """Optimizer and learning-rate schedule of one stage (linear warmup, then cosine to zero)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    warmup_epochs: float = 0.0
    min_steps: int = 0
    clip_grad_norm: float | None = None  # scale a step's gradients down to this global norm when above it


@dataclass
class FitResult:
    """What a stage did: steps, epochs, global batch rows seen, wall seconds of this call, the loss of the last
    step, the step it resumed at (0: from the start) and the precision it ran at."""

    steps: int
    epochs: int
    images_seen: int
    seconds: float
    last_loss: float
    resumed_at: int = 0
    precision: str = "fp32"


def build_optimizer(params: Iterable[nn.Parameter], schedule: Schedule) -> torch.optim.Optimizer:
    """No weight decay on 1-d parameters (biases, norms)."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": schedule.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if schedule.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=schedule.lr, momentum=0.9, nesterov=True)
    # The fused kernel does the whole update in one pass (part of the default's speed-up, BENCHMARKS.md).
    return torch.optim.AdamW(groups, lr=schedule.lr, fused=True)


def _clip(params: list[nn.Parameter], max_norm: float) -> None:
    """Scale the gradients of `params` so that their global L2 norm is at most `max_norm` (on the device: no
    host sync; a non-finite norm is left to the loop's finite-loss check)."""
    torch.nn.utils.clip_grad_norm_(params, max_norm, error_if_nonfinite=False, foreach=None)


def lr_at(step: int, total: int, warmup: int, base_lr: float) -> float:
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _epoch_batches(source: BatchSource | StreamSource, sampler: EpochSampler | None, epoch: int, batch_size: int,
                   rank: int, world_size: int, skip: int = 0) -> Iterator[tuple[Batch, int, int]]:
    """(this rank's batch, its rows, global batch rows) for every step of `epoch` from step `skip` on (a resumed
    stage: an index source skips without building; a stream reads and drops the first `skip` batches)."""
    if sampler is None:
        stream = cast(StreamSource, source)
        start = part_start(batch_size, rank, world_size)
        local = part_start(batch_size, rank + 1, world_size) - start
        for i, batch in enumerate(stream.epoch_batches(epoch, batch_size, rank, world_size)):
            if i < skip:
                continue
            if world_size > 1:
                batch[ROWS_KEY] = torch.tensor([start, batch_size])
            yield batch, local, batch_size
        return
    sampler.set_epoch(epoch)
    for indices in sampler.global_batches()[skip:]:
        part = rank_part(indices, rank, world_size)
        batch = source.batch(part, epoch)  # type: ignore[union-attr]
        if world_size > 1:
            batch[ROWS_KEY] = torch.tensor([part_start(len(indices), rank, world_size), len(indices)])
        yield batch, len(part), len(indices)


def _rank_scale(out: dict[str, torch.Tensor], local: int, global_rows: int, world_size: int,
                device: torch.device) -> float | torch.Tensor:
    """The factor on this rank's loss that makes DDP's gradient average the one-process gradient.

    DDP averages gradients over ranks, but a rank's loss is a mean over its own part. Weighting by rows keeps
    the global mean when parts differ in size; a task whose loss averages over something else (labeled
    pixels) returns that count as `out["loss_weight"]`, summed over ranks here (one small all-reduce; on a
    GPU it stays on the device, so there is no host sync).
    """
    weight = out.get("loss_weight")
    if weight is None:
        return local * world_size / global_rows
    if device.type == "cuda":
        mine = weight.detach().reshape(()).double()
        total = distributed.all_reduce_sum(mine.clone())
        return torch.where(total > 0, mine * world_size / total.clamp(min=1e-30), 0.0).float()
    mine = weight.detach().reshape(1).to("cpu", torch.float64)
    total = float(distributed.all_reduce_sum(mine.clone()))
    return float(mine) * world_size / total if total > 0 else 0.0


def _fingerprint(desc: str, schedule: Schedule, seed: int, world_size: int, steps_per_epoch: int, total: int,
                 n: int, params: list[nn.Parameter], precision: str) -> dict[str, Any]:
    """What a mid-stage checkpoint must match to be used (see `engine.train_state`)."""
    # an optional key left at None is omitted, so checkpoints written before the key existed still match
    sched = {k: v for k, v in asdict(schedule).items() if v is not None}
    return {"stage": desc, "schedule": sched, "seed": seed, "world_size": world_size,
            "steps_per_epoch": steps_per_epoch, "total_steps": total, "items": n,
            "trained_shapes": [list(p.shape) for p in params], "precision": precision}


def _prepare_host(task: Task, device: torch.device) -> Callable[[tuple[Batch, int, int]], tuple[Batch, int, int]]:
    """What the prefetch thread does to each batch: the task's host-side `prepare` (view replay, cached
    target gathers; deterministic), then page-locked memory for a CUDA device."""
    prepare = getattr(task, "prepare", None)

    def build(item: tuple[Batch, int, int]) -> tuple[Batch, int, int]:
        batch, local, global_rows = item
        if prepare is not None:
            batch = prepare(batch)
        return pin(batch, device), local, global_rows

    return build


class _Checkpoints:
    """When to write the mid-stage checkpoint: every `every_steps` steps, and at the first log point after
    `minutes` have passed (rank 0's clock, broadcast so every rank agrees)."""

    def __init__(self, state: TrainState | None, options: LoopOptions) -> None:
        self.state, self.options = state, options
        self.last = time.monotonic()

    def due(self, step: int, total: int, log_point: bool) -> bool:
        if self.state is None or step >= total:
            return False
        every = self.options.checkpoint_every_steps
        if every is not None and step % every == 0:
            return True
        if not log_point or self.options.checkpoint_minutes <= 0:
            return False
        late = time.monotonic() - self.last >= self.options.checkpoint_minutes * 60
        return bool(distributed.broadcast_object(late)) if distributed.is_distributed() else late

    def save(self, position: Position) -> None:
        assert self.state is not None
        self.state.save(position)
        self.last = time.monotonic()


def _lr_of(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def fit(
    task: Task,
    source: BatchSource | StreamSource,
    schedule: Schedule,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    desc: str = "train",
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    options: LoopOptions | None = None,
) -> FitResult:
    """Train `task` on batches from `source` for `schedule.epochs` (at least `schedule.min_steps` steps).

    `source`: index-addressed (`BatchSource`, sampled here) or a stream (`StreamSource`). `rank` and
    `world_size` default to the current process group's (0 of 1 without one); with more than one process
    the task's step runs through DistributedDataParallel. `images_seen` counts global batch rows.
    `options` (`LoopOptions`; default: fp32, no files) sets precision, compilation, prefetching, mid-stage
    checkpoints and logging. A step makes no host-device sync: the loss and metrics are read, and the
    finite-loss check made, every `options.log_every_steps` steps and at the end of the stage.
    """
    opts = options or LoopOptions()
    device = torch.device(device)
    here = distributed.info()
    rank = here.rank if rank is None else rank
    world_size = here.world_size if world_size is None else world_size
    if world_size > 1 and not distributed.is_distributed():
        raise ConfigError(f"{desc}: world_size={world_size} but no process group is initialised; launch with "
                          f"`torchrun --nproc_per_node {world_size} taskdistill ...` or use one process")
    streaming = isinstance(source, StreamSource)
    if world_size > 1 and min(schedule.batch_size, len(source)) < world_size:
        raise ConfigError(f"{desc}: a global batch of {min(schedule.batch_size, len(source))} rows cannot be split "
                          f"over {world_size} processes; raise the batch size or use fewer processes")
    sampler = None if streaming else EpochSampler(len(source), schedule.batch_size, shuffle=True, seed=seed,
                                                  drop_last=True)
    steps_per_epoch = source.steps_per_epoch(schedule.batch_size) if streaming else len(sampler)  # type: ignore[union-attr,arg-type]
    epochs = schedule.epochs
    if epochs > 0 and schedule.min_steps > 0:
        epochs = max(epochs, math.ceil(schedule.min_steps / steps_per_epoch))
    total = epochs * steps_per_epoch
    if total == 0:
        return FitResult(0, 0, 0, 0.0, float("nan"))
    precision = resolve_precision(opts.precision, device)
    configure_device(device)
    params = list(task.trainable_parameters())
    trainable = [p for p in params if p.requires_grad]
    needs_modules = opts.compile or opts.checkpoint_path is not None or (
        device.type == "cuda" and use_channels_last(opts.channels_last, device))
    modules = trained_modules(task, trainable) if needs_modules else []
    if device.type == "cuda" and use_channels_last(opts.channels_last, device):
        for m in modules:  # on the CPU the models keep their oneDNN-safe layout (models.memory_format)
            m.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(params, schedule)
    scaler = grad_scaler(precision, device)
    warmup = int(schedule.warmup_epochs * steps_per_epoch)
    state = None
    if opts.checkpoint_path is not None:
        fingerprint = _fingerprint(desc, schedule, seed, world_size, steps_per_epoch, total, len(source),
                                   trainable, precision)
        state = TrainState(opts.checkpoint_path, fingerprint, modules, optimizer, task, scaler)
    pos = Position(0, 0, 0, 0)
    if state is not None and distributed.broadcast_object(state.exists()):  # rank 0's view: every rank agrees
        if opts.resume:
            pos = state.load()
        else:
            state.remove()
    checkpoints = _Checkpoints(state, opts)
    log = ScalarLog(opts.log_path if rank == 0 else None, opts.tensorboard_dir if rank == 0 else None, tag=desc,
                    resume_step=pos.step if pos.step else None)
    try:  # the scalar log (maybe a TensorBoard writer) is closed if the setup below fails
        for m in modules if opts.compile else []:
            m.compile()
        task.train(True)
        step_fn = DDPTask(task, trainable, device) if world_size > 1 else task
    except BaseException:
        log.close()
        raise
    step, seen, last = pos.step, pos.images_seen, float("nan")
    scalars, epoch_means = StepScalars(device), EpochMeans()
    start = time.perf_counter()
    shown = progress and rank == 0
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", disable=None if shown else True, leave=False,
               mininterval=1.0)
    line = ProgressLine((total - step) * schedule.batch_size, desc, unit="img", every=opts.progress_seconds,
                        enabled=shown and not bool(getattr(sys.stderr, "isatty", lambda: False)()))
    build = _prepare_host(task, device)

    def read(epoch: int) -> float:
        reading = scalars.read()
        if reading.bad_step >= 0:
            raise FloatingPointError(f"{desc}: loss became {reading.bad_loss} at step {reading.bad_step}; "
                                     f"lower the learning rate")
        epoch_means.add(reading)
        if reading.steps:
            elapsed = time.perf_counter() - start
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{reading.last_loss:.4f}")
            log.write({"kind": "step", "step": step, "epoch": epoch, "lr": _lr_of(optimizer), "images": seen,
                       "seconds": round(elapsed, 3), "images_per_s": (seen - pos.images_seen) / max(elapsed, 1e-9),
                       **reading.means})
        return reading.last_loss

    try:
        for epoch in range(pos.epoch, epochs):
            skip = pos.step_in_epoch if epoch == pos.epoch else 0
            batches = _epoch_batches(source, sampler, epoch, schedule.batch_size, rank, world_size, skip)
            # one prefetch thread per epoch: an epoch's source is opened while the loop waits for its first batch
            for in_epoch, (batch, local, global_rows) in enumerate(ahead(batches, build, opts.prefetch), start=skip):
                batch = to_device(batch, device)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total, warmup, schedule.lr)
                with autocast(precision, device):
                    out = step_fn(batch)
                loss = out["loss"]
                optimizer.zero_grad(set_to_none=True)
                scale = _rank_scale(out, local, global_rows, world_size, device) if world_size > 1 else 1.0
                scaled = loss * scale if not isinstance(scale, float) or scale != 1.0 else loss
                if scaler is not None:
                    scaler.scale(scaled).backward()
                    if schedule.clip_grad_norm is not None:
                        scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
                        _clip(trainable, schedule.clip_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    scaled.backward()
                    if schedule.clip_grad_norm is not None:
                        _clip(trainable, schedule.clip_grad_norm)
                    optimizer.step()
                scalars.add(out, step)
                step += 1
                seen += global_rows
                log_point = step % opts.log_every_steps == 0 or step == total
                save = checkpoints.due(step, total, log_point)
                if log_point or save:
                    last = read(epoch)
                if save:
                    ends_epoch = in_epoch + 1 == steps_per_epoch
                    checkpoints.save(Position(step, epoch + 1 if ends_epoch else epoch,
                                              0 if ends_epoch else in_epoch + 1, seen))
                bar.update(1)
                line.update(global_rows)
            last = read(epoch) if scalars.count else last
            if epoch_means.steps:
                log.write({"kind": "epoch", "step": step, "epoch": epoch, "lr": _lr_of(optimizer), "images": seen,
                           "seconds": round(time.perf_counter() - start, 3), "images_per_s": float("nan"),
                           **epoch_means.means()})
            epoch_means = EpochMeans()
        if isinstance(step_fn, DDPTask):
            step_fn.finish()
    finally:
        bar.close()
        if line.lines:
            line.close()
        log.close()
        task.train(False)
        for m in modules if opts.compile else []:
            m._compiled_call_impl = None  # back to eager: the stage's compiled graphs are not kept
    if step != total:
        raise RuntimeError(f"{desc}: the source gave {step} steps, {total} were planned; a stream must yield "
                           f"exactly steps_per_epoch batches per epoch on every rank")
    if state is not None:
        state.remove()
    return FitResult(steps=step, epochs=epochs, images_seen=seen, seconds=time.perf_counter() - start,
                     last_loss=distributed.mean_over_ranks(last) if world_size > 1 else last,
                     resumed_at=pos.step, precision=precision)
