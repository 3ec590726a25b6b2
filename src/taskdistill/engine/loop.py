"""The one training loop. Every stage and method runs through `fit`; they differ only in the task."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from taskdistill.engine.batches import Batch, BatchSource, EpochSampler


class Task(Protocol):
    """What a method hands the loop: a loss over a batch, and the parameters it trains.

    `__call__(batch)` returns `{"loss": scalar tensor, **parts}`; `train(mode)` sets module modes
    (a frozen teacher stays in eval mode whatever `mode` is).
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


def fit(
    task: Task,
    source: BatchSource,
    schedule: Schedule,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    desc: str = "train",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> FitResult:
    """Train `task` on batches from `source` for `schedule.epochs` (at least `schedule.min_steps` steps)."""
    device = torch.device(device)
    sampler = EpochSampler(len(source), schedule.batch_size, shuffle=True, seed=seed, drop_last=True,
                           rank=rank, world_size=world_size)
    steps_per_epoch = len(sampler)
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
    step, seen, last = 0, 0, float("nan")
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, unit="step", disable=None if (progress and rank == 0) else True, leave=False, mininterval=1.0)
    try:
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for indices in sampler:
                batch = _to(source.batch(indices, epoch), device)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total, warmup, schedule.lr)
                out = task(batch)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {step}; lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                seen += len(indices)
                if step % 10 == 0 or step == total:
                    last = float(loss.detach())
                    bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{last:.4f}")
                bar.update(1)
    finally:
        bar.close()
        task.train(False)
    return FitResult(steps=step, epochs=epochs, images_seen=seen * world_size, seconds=time.perf_counter() - start,
                     last_loss=last)
