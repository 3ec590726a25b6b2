"""The one training loop. Every stage and method runs through `fit`; they differ only in the task.

Under a process group (torchrun) the same loop runs on every rank: the task's step goes through
DistributedDataParallel (`engine.ddp`), each rank takes its part of every global batch of
`schedule.batch_size` rows, and the steps, learning rates and (for mean losses) gradients are the ones a
single process would take on the same data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from taskdistill.engine import distributed
from taskdistill.engine.batches import (
    ROWS_KEY,
    Batch,
    BatchSource,
    EpochSampler,
    StreamSource,
    part_start,
    rank_part,
)
from taskdistill.engine.ddp import DDPTask
from taskdistill.errors import ConfigError


class Task(Protocol):
    """What a method hands the loop: a loss over a batch, and the parameters it trains.

    `__call__(batch)` returns `{"loss": scalar tensor, **parts}`, plus `"loss_weight"` (the number of terms
    the loss averages) when that is not the batch's row count; `train(mode)` sets module modes (a frozen
    teacher stays in eval mode whatever `mode` is).
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


@dataclass
class FitResult:
    steps: int
    epochs: int
    images_seen: int
    seconds: float
    last_loss: float


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


def lr_at(step: int, total: int, warmup: int, base_lr: float) -> float:
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _epoch_batches(source: BatchSource | StreamSource, sampler: EpochSampler | None, epoch: int, batch_size: int,
                   rank: int, world_size: int) -> Iterator[tuple[Batch, int, int]]:
    """(this rank's batch, its rows, global batch rows) for every step of `epoch`."""
    if sampler is None:
        stream = cast(StreamSource, source)
        start = part_start(batch_size, rank, world_size)
        local = part_start(batch_size, rank + 1, world_size) - start
        for batch in stream.epoch_batches(epoch, batch_size, rank, world_size):
            if world_size > 1:
                batch[ROWS_KEY] = torch.tensor([start, batch_size])
            yield batch, local, batch_size
        return
    sampler.set_epoch(epoch)
    for indices in sampler.global_batches():
        part = rank_part(indices, rank, world_size)
        batch = source.batch(part, epoch)  # type: ignore[union-attr]
        if world_size > 1:
            batch[ROWS_KEY] = torch.tensor([part_start(len(indices), rank, world_size), len(indices)])
        yield batch, len(part), len(indices)


def _rank_scale(out: dict[str, torch.Tensor], local: int, global_rows: int, world_size: int) -> float:
    """The factor on this rank's loss that makes DDP's gradient average the one-process gradient.

    DDP averages gradients over ranks, but a rank's loss is a mean over its own part. Weighting by rows keeps
    the global mean when parts differ in size; a task whose loss averages over something else (labeled
    pixels) returns that count as `out["loss_weight"]`, summed over ranks here (one small all-reduce).
    """
    weight = out.get("loss_weight")
    if weight is None:
        return local * world_size / global_rows
    mine = weight.detach().reshape(1).to("cpu", torch.float64)
    total = float(distributed.all_reduce_sum(mine.clone()))
    return float(mine) * world_size / total if total > 0 else 0.0


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
) -> FitResult:
    """Train `task` on batches from `source` for `schedule.epochs` (at least `schedule.min_steps` steps).

    `source`: index-addressed (`BatchSource`, sampled here) or a stream (`StreamSource`). `rank` and
    `world_size` default to the current process group's (0 of 1 without one); with more than one process
    the task's step runs through DistributedDataParallel. `images_seen` counts global batch rows.
    """
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
    params = list(task.trainable_parameters())
    optimizer = build_optimizer(params, schedule)
    warmup = int(schedule.warmup_epochs * steps_per_epoch)
    task.train(True)
    step_fn = DDPTask(task, [p for p in params if p.requires_grad], device) if world_size > 1 else task
    step, seen, last = 0, 0, float("nan")
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, unit="step", disable=None if (progress and rank == 0) else True, leave=False, mininterval=1.0)
    try:
        for epoch in range(epochs):
            for batch, local, global_rows in _epoch_batches(source, sampler, epoch, schedule.batch_size, rank,
                                                            world_size):
                batch = _to(batch, device)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total, warmup, schedule.lr)
                out = step_fn(batch)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {step}; lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                scale = _rank_scale(out, local, global_rows, world_size) if world_size > 1 else 1.0
                (loss * scale if scale != 1.0 else loss).backward()
                optimizer.step()
                step += 1
                seen += global_rows
                if step % 10 == 0 or step == total:
                    last = float(loss.detach())
                    bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{last:.4f}")
                bar.update(1)
        if isinstance(step_fn, DDPTask):
            step_fn.finish()
    finally:
        bar.close()
        task.train(False)
    if step != total:
        raise RuntimeError(f"{desc}: the source gave {step} steps, {total} were planned; a stream must yield "
                           f"exactly steps_per_epoch batches per epoch on every rank")
    return FitResult(steps=step, epochs=epochs, images_seen=seen, seconds=time.perf_counter() - start,
                     last_loss=distributed.mean_over_ranks(last) if world_size > 1 else last)
