"""Batches built ahead in a background thread, in pinned host memory, and copied to the device without blocking.

`ahead(items, build, depth)` runs `build(item)` for the next `depth` items in one background thread while
the caller works on the current one, and yields the results in order: the same values in the same order
as `map(build, items)`, whatever the depth. One thread, in order, so a source whose batches depend on
their order (a stream, a per-epoch view draw) sees the same calls as without prefetching; a builder must
not draw from torch's or numpy's global random generators (the sources in this package use their own
seeded generators), because those draws would interleave with the training step's.

`to_device(batch, device)` moves a batch: entries in `HOST_KEYS` stay on the host, the others go with
`non_blocking=True` (asynchronous from pinned memory, see `pin`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch

from taskdistill.engine.batches import HOST_KEYS, Batch

T = TypeVar("T")
R = TypeVar("R")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def ahead(items: Iterable[T], build: Callable[[T], R], depth: int = 2) -> Iterator[R]:
    """`build(item)` for every item, computed up to `depth` items ahead in one background thread (depth 0:
    inline, no thread). An error in `build` or in `items` is raised here, at the item it belongs to."""
    if depth <= 0:
        for item in items:
            yield build(item)
        return
    out: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if stop.is_set() or not put(build(item)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer and raised there
            put(_Failure(e))
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="taskdistill-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            value = out.get()
            if value is _DONE:
                return
            if isinstance(value, _Failure):
                raise value.error
            yield value
    finally:
        stop.set()
        thread.join(timeout=10.0)


def pin(batch: Batch, device: torch.device) -> Batch:
    """Page-locked copies of the entries bound for a CUDA `device` (others unchanged), so that the copy to the
    device can overlap with compute. No-op for a CPU device."""
    if device.type != "cuda":
        return batch
    return {k: v if k in HOST_KEYS or v.is_pinned() else v.pin_memory() for k, v in batch.items()}


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Every entry but `HOST_KEYS` on `device` (`non_blocking`); on the CPU the same tensors, untouched."""
    if device.type == "cpu":
        return batch
    return {k: v if k in HOST_KEYS else v.to(device, non_blocking=True) for k, v in batch.items()}
