"""PyTorch's own distributed engine, as the rest of the package uses it.

`torchrun --nproc_per_node N taskdistill ...` starts N processes with `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
`MASTER_ADDR` and `MASTER_PORT` set; `session()` (entered by the CLI) turns those into a process group
(gloo for CPU tensors, plus nccl for CUDA tensors when CUDA is there) and tears it down at the end.
Everything else asks this module where it stands: with no process group every helper is a no-op for one
process, so single-process behaviour is unchanged.

Conventions the package keeps under a process group:
- every rank runs the same code path (collectives inside `fit`, `evaluate`, the teacher-output cache and
  `embed` must be reached by all ranks);
- only rank 0 writes run folders, checkpoints, reports and cache files (`on_main`), the others wait and read;
- run folders and caches live on a filesystem every node sees (`check_visible` fails clearly otherwise).
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from taskdistill.errors import ConfigError

T = TypeVar("T")
_CPU = torch.device("cpu")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: global `rank` of `world_size`, and `local_rank` of `local_world_size` on its node."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def info() -> DistInfo:
    """Rank and world size of the current process group (0 of 1 without one)."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        return DistInfo(rank, world, local_rank, local_world)
    return DistInfo(0, 1, 0, 1)


def rank() -> int:
    return info().rank


def world_size() -> int:
    return info().world_size


def is_main() -> bool:
    """True on rank 0, and in a single process."""
    return info().rank == 0


def launched_by_torchrun() -> bool:
    """True when the environment describes more than one process (torchrun or a compatible launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> bool:
    """Initialise the default process group from torchrun's variables; True when this call created it.

    Backends: gloo for CPU tensors, and nccl for CUDA tensors when CUDA is available ("cpu:gloo,cuda:nccl"),
    so CPU collectives (metrics, objects) and GPU collectives (gradients) both work in one group.
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 asks for several processes, but this torch build has no torch.distributed")
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set; launch with "
                          f"`torchrun --nproc_per_node N taskdistill ...` (it sets them), or unset WORLD_SIZE")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo", init_method="env://")
    return True


@contextmanager
def session() -> Iterator[DistInfo]:
    """Enter a process group when launched by torchrun (no-op otherwise); destroy it on exit if created here."""
    created = init_from_env()
    try:
        yield info()
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """Under a process group, a CUDA device becomes this rank's GPU (`cuda:LOCAL_RANK`); others are unchanged."""
    if device.type != "cuda" or not is_distributed():
        return device
    return torch.device("cuda", info().local_rank % torch.cuda.device_count())


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks, in place; returns it (unchanged in one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def mean_over_ranks(value: float) -> float:
    """The mean of a float over ranks (the value itself in one process)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    return float(all_reduce_sum(t)[0]) / world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` from rank `src` on every rank (pickled; for small objects: decisions, states, errors)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_CPU)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (`[obj]` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def _portable(error: BaseException) -> BaseException:
    """`error` if it survives pickling, else a RuntimeError carrying its text."""
    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any pickling failure: send the text instead
        return RuntimeError(f"rank 0 failed with {type(error).__name__}: {error}")


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only; every rank returns its result, or raises the error it raised.

    Use it for work with side effects on shared files (create a folder, write a state file) whose outcome
    the other ranks must follow: a `RunFolderError` on rank 0 is raised on every rank instead of leaving
    the others waiting at the next collective.
    """
    if not is_distributed():
        return fn()
    payload: tuple[str, Any] | None = None
    failure: BaseException | None = None
    if is_main():
        try:
            payload = ("ok", fn())
        except BaseException as e:  # noqa: BLE001 - re-raised below, on every rank
            failure = e
            payload = ("error", _portable(e))
    payload = broadcast_object(payload)
    if failure is not None:
        raise failure
    if payload[0] == "error":
        raise payload[1]
    return payload[1]


def check_visible(path: str | Path, what: str) -> None:
    """After rank 0 wrote `path`: fail on every rank, naming the fix, if some rank cannot see it.

    Ranks on several nodes must share the filesystem that holds run folders and caches.
    """
    if not is_distributed():
        return
    seen = gather_objects((Path(path).exists(), socket.gethostname()))
    blind = [f"rank {r} on {host}" for r, (ok, host) in enumerate(seen) if not ok]
    if blind:
        raise ConfigError(f"{what} '{path}' written by rank 0 is not visible to {', '.join(blind)}; put output_dir "
                          f"(and distill.cache_dir / --out) on a filesystem that every node mounts at the same path")


# ---- splitting a global batch over ranks ---------------------------------------------------------
def rank_part(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's contiguous part of a global batch `[B]` (parts differ in size by at most one)."""
    if world_size == 1:
        return indices
    return indices.tensor_split(world_size)[rank]


def part_start(size: int, rank: int, world_size: int) -> int:
    """Index of the first row of `rank`'s part in a global batch of `size` rows (see `rank_part`)."""
    base, extra = divmod(size, world_size)
    return rank * base + min(rank, extra)
