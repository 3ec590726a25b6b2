"""A task's training step through torch's DistributedDataParallel.

Tasks hold their modules (student, projector, prompt, ...) and call them inside `__call__`. To put that
call under DDP without changing any task, the modules that own the task's trainable parameters are
registered in one container `nn.Module` whose `forward(batch)` is `task(batch)`; DDP wraps the container.
The parameters are the task's own objects, so DDP's autograd hooks average their gradients across ranks
during `backward()` (gradient sync is DDP's, bucketed and overlapped, not hand-rolled).

- Parameters the task does not train (a frozen teacher inside the module, a head the loss never reaches)
  are ignored by DDP by name, so it neither broadcasts them nor waits for their gradients.
- Buffers are synced when DDP is built and not at every step (`forward_sync_buffers=False`): batch-norm
  layers in training mode normalise with batch statistics, so their running statistics never change a
  gradient. `finish()` averages the running statistics that moved (a mean of per-rank EMAs of per-rank
  batch means is the EMA of the global batch means) and copies every other buffer from rank 0, so every
  rank ends with the model rank 0 saves.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from taskdistill.distributed import world_size
from taskdistill.engine.batches import Batch


def trained_modules(task: object, params: Iterable[nn.Parameter]) -> list[nn.Module]:
    """The outermost modules among the task's attributes that own any of `params` (a task may instead name
    them with a `modules()` method). Every parameter must be owned by one, else it could not be synced."""
    wanted = {id(p) for p in params}
    named = getattr(task, "modules", None)
    candidates = list(named()) if callable(named) else [v for v in vars(task).values() if isinstance(v, nn.Module)]
    owners = [m for m in candidates if any(id(p) in wanted for p in m.parameters())]
    inner = {id(sub) for m in owners for sub in m.modules() if sub is not m}
    owners = [m for m in owners if id(m) not in inner]
    unique: list[nn.Module] = []
    for m in owners:
        if all(m is not u for u in unique):
            unique.append(m)
    held = {id(p) for m in unique for p in m.parameters()}
    if not wanted <= held:
        raise ValueError(f"{type(task).__name__} trains {len(wanted - held)} parameter(s) that no nn.Module attribute "
                         f"of the task holds; give the task a `modules()` method that returns the modules it trains")
    return unique


class _TaskModule(nn.Module):
    """The trained modules as one module; `forward(batch)` runs the task's step on them."""

    def __init__(self, task: object, modules: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.task = task  # not an nn.Module: a plain attribute

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.task(batch)  # type: ignore[operator]


def _bn_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats and m.running_mean is not None]


class DDPTask:
    """`task` whose `__call__` runs through DistributedDataParallel; call `finish()` after the last step."""

    def __init__(self, task: object, params: list[nn.Parameter], device: torch.device) -> None:
        trainable = {id(p) for p in params}
        self.container = _TaskModule(task, trained_modules(task, params))
        ignore = [n for n, p in self.container.named_parameters() if id(p) not in trainable]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.container, ignore)
        # device_ids=None: the loop has already moved the batch, and host-side entries (indices, views,
        # batch rows) must stay on the host; with device_ids DDP would copy them to the GPU and the tasks'
        # reads of them would sync every step.
        self.ddp = DistributedDataParallel(
            self.container, device_ids=None, forward_sync_buffers=False,
            find_unused_parameters=bool(getattr(task, "find_unused_parameters", False)))
        self._tracked = {id(m): int(m.num_batches_tracked) for m in _bn_layers(self.container)
                         if m.num_batches_tracked is not None}

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.ddp(batch)

    @torch.no_grad()
    def finish(self) -> None:
        """Make every rank's buffers equal: moved batch-norm statistics averaged, all others from rank 0."""
        averaged: set[int] = set()
        w = world_size()
        for m in _bn_layers(self.container):
            before = self._tracked.get(id(m))
            if before is None or int(m.num_batches_tracked) == before:
                continue  # frozen (eval-mode) statistics: identical on every rank already
            for stat in (m.running_mean, m.running_var):
                dist.all_reduce(stat, op=dist.ReduceOp.SUM)
                stat.div_(w)
                averaged.add(id(stat))
        for buf in self.container.buffers():
            if id(buf) not in averaged:
                dist.broadcast(buf, src=0)
