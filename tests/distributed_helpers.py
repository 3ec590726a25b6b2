"""Launch tiny gloo process groups on the CPU for tests: spawned workers, or `torchrun` on the CLI.

Every process uses one intra-op thread (the machine is small and other work shares it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, world_size: int, port: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable[..., None], world_size: int, *args: Any) -> None:
    """Run `fn(rank, *args)` in `world_size` fresh processes joined in a gloo group; re-raise a failure.

    `fn` must be importable (a module-level function); results travel through files the caller names.
    The processes fork from a forkserver that imported torch and the package once per test session
    (a fresh single-threaded process, so forking it is safe), instead of importing them each time.
    """
    mp.get_context("forkserver").set_forkserver_preload(
        ["torch", "torch.distributed", "taskdistill.cli.main", "taskdistill.pipelines.methods", __name__,
         fn.__module__])
    mp.start_processes(_entry, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True,
                       start_method="forkserver")


def torchrun(nproc: int, argv: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`torchrun --nproc_per_node nproc -m taskdistill.cli.main ARGV` with one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), "-m", "taskdistill.cli.main", *argv]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
