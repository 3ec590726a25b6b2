"""Building a teacher-output cache entry: the teacher run over every (transfer image, view), resumably.

The work is a fixed order of (view, batch of image indices); the next batches' images are read and their views
replayed ahead in a background thread (`engine.prefetch`), the teacher runs at the entry's precision through
the shared inference step (`engine.inference.infer_batch`), and outputs go straight into memory-mapped arrays
in the `<key>.partial` folder, with progress recorded so an interrupted build continues (`teacher_outputs`).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from taskdistill import distributed
from taskdistill.atomic import write_json
from taskdistill.cache.soft_labels import FULL_STORAGE, Storage, compress_topk
from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import Views, model_input, replay_views
from taskdistill.engine.batches import EpochSampler
from taskdistill.engine.inference import infer_batch
from taskdistill.engine.prefetch import ahead
from taskdistill.progress import ProgressLine

OutputKind = str  # "logits" or "features" for a plain teacher; a teacher with `cache_outputs` names its own


def teacher_forward(teacher: nn.Module, images: torch.Tensor, views: Views, kind: OutputKind) -> torch.Tensor:
    """`[B, K]` outputs of `teacher` for uint8 `images` `[B, C, H, W]` seen as `views`."""
    if hasattr(teacher, "cache_outputs"):
        return teacher.cache_outputs(images, views, kind)
    x = model_input(images, teacher.preprocess, views)
    if kind == "features":
        return teacher.forward_head(teacher.forward_features(x), pre_logits=True)
    if kind == "logits":
        return teacher(x)
    raise ValueError(f"unknown teacher output kind '{kind}' (logits or features)")


def _work(n: int, num_views: int, batch_size: int) -> list[tuple[int, torch.Tensor]]:
    """The fixed order of a build: (view, image indices) batches, views outer."""
    batches = list(EpochSampler(n, batch_size, shuffle=False))
    return [(v, idx) for v in range(num_views) for idx in batches]


def _gather_outputs(out: torch.Tensor | None) -> list[torch.Tensor | None]:
    """Every rank's float32 `[b, K]` output of this round (None where a rank had no work), in rank order."""
    if not distributed.is_distributed():
        return [out]
    world = distributed.world_size()
    shape = torch.tensor(list(out.shape) if out is not None else [0, 0], dtype=torch.long)
    shapes = [torch.empty(2, dtype=torch.long) for _ in range(world)]
    dist.all_gather(shapes, shape)
    rows, width = max(int(s[0]) for s in shapes), max(int(s[1]) for s in shapes)
    padded = torch.zeros(rows, width)
    if out is not None:
        padded[: out.shape[0], : out.shape[1]] = out
    parts = [torch.empty(rows, width) for _ in range(world)]
    dist.all_gather(parts, padded)
    return [p[: int(s[0]), : int(s[1])] if int(s[0]) else None for p, s in zip(parts, shapes, strict=True)]


def _read_progress(folder: Path, batch_size: int, storage: Storage) -> dict[str, Any]:
    """What an interrupted build in `folder` had done, or {} to start over (rank 0). A build whose record or
    arrays cannot be read back is started over rather than trusted."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "progress.json"
    try:
        progress = json.loads(path.read_text()) if path.is_file() else {}
        if progress.get("done_batches"):
            for name in ("values.npy", "indices.npy") if storage.format == "topk" else ("values.npy",):
                np.load(folder / name, mmap_mode="r")
    except (OSError, ValueError, AttributeError) as e:
        print(f"teacher-output cache: the interrupted build in {folder} cannot be continued ({e}); starting it over",
              file=sys.stderr, flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        return {}
    if progress and progress.get("batch_size") != batch_size:
        return {}  # another batch size orders the work differently: start over
    return progress


@torch.inference_mode()
def build_teacher_outputs(teacher: nn.Module, transfer: ImageSet, num_views: int, view_seed: int, folder: Path,
                          batch_size: int = 256, device: torch.device | str = "cpu", kind: OutputKind = "logits",
                          storage: Storage = FULL_STORAGE, flush_seconds: float = 10.0,
                          precision: str = "fp32") -> tuple[int, int]:
    """Fill `folder` (a `<key>.partial` directory) with the teacher's outputs, continuing an earlier
    interrupted build. Returns (pairs of (image, view) computed in this call, outputs per view K).

    Progress is recorded (after the arrays are flushed) every `flush_seconds`, so a crash loses at most
    that much work and never leaves a batch counted that was not written.

    Under a process group the W ranks take the fixed work order W batches at a time (rank r runs batch
    `done + W * round + r`: the same batches, so the same numbers, as one process). When all ranks are on one
    node each writes its own rows into the memory-mapped arrays (flushes and progress records are agreed
    collectively); across nodes the outputs are gathered and rank 0 alone writes them. Progress counts
    batches of the one-process order, so a build interrupted under one world size continues under another.

    The next batches' images are read (and their views replayed) ahead in a background thread; the teacher runs
    at `precision` (`engine.precision`; fp32: no autocast).
    """
    teacher.eval()
    writer, rank, world = distributed.is_main(), distributed.rank(), distributed.world_size()
    # On one node every rank writes its own rows into the shared memory-mapped arrays (nothing is gathered into
    # one process); across nodes (mmap writes are not coherent between hosts) rank 0 gathers and writes.
    shared = world > 1 and distributed.info().local_world_size == world
    writes = writer or shared
    progress_path = folder / "progress.json"
    progress = distributed.on_main(lambda: _read_progress(folder, batch_size, storage))
    done, num_outputs = progress.get("done_batches", 0), progress.get("num_outputs", 0)
    n = len(transfer)
    work = _work(n, num_views, batch_size)
    total = len(work)
    arrays: list[np.ndarray | None] = [None, None]  # values, indices (topk)
    if done and writes:
        arrays = _open_arrays(folder, storage)
    computed, last_flush = 0, time.monotonic()

    def flush(count: int) -> None:
        for arr in arrays:
            if arr is not None:
                arr.flush()
        if shared:
            distributed.barrier()  # every rank's rows are on disk before the progress says so
        if writer:
            write_json(progress_path, {"done_batches": count, "total_batches": total, "batch_size": batch_size,
                                       "num_outputs": num_outputs})

    bar = tqdm(total=n * num_views, desc=f"teacher {kind}", unit="img", leave=False, mininterval=1.0,
               disable=None if writer else True)
    bar.update(sum(len(idx) for _, idx in work[:done]))
    # off a terminal (nohup, CI, logs): a line with rate and ETA every few seconds instead of the bar
    line = ProgressLine(n * num_views - sum(len(idx) for _, idx in work[:done]), f"teacher {kind}", unit="img",
                        enabled=writer and not bool(getattr(sys.stderr, "isatty", lambda: False)()))
    cuda = torch.device(device).type == "cuda"

    def read(first: int) -> tuple[torch.Tensor, Views] | None:
        """This rank's images and views of round `first` (host side; run ahead in the prefetch thread)."""
        if first + rank >= total:
            return None
        v, idx = work[first + rank]
        images = transfer.images[idx]
        return (images.pin_memory() if cuda else images), replay_views(idx, torch.full_like(idx, v), view_seed)

    def forward(x: torch.Tensor, views: Views | None) -> torch.Tensor:
        return teacher_forward(teacher, x, views, kind)  # type: ignore[arg-type]

    for first, job in zip(range(done, total, world), ahead(iter(range(done, total, world)), read), strict=True):
        out = None
        if job is not None:
            out = infer_batch(forward, job[0], device, precision, job[1]).float().cpu()
        if shared:
            outs: list[torch.Tensor | None] = [out if j == rank else None for j in range(world)]
            rows_done = sum(len(work[first + j][1]) for j in range(world) if first + j < total)
        else:
            outs = _gather_outputs(out)
            rows_done = sum(len(o) for o in outs if o is not None)
        computed += rows_done
        bar.update(rows_done)
        line.update(rows_done)
        if arrays[0] is None and writes:
            if shared:
                widths = [w for w in distributed.gather_objects(None if out is None else out.shape[1]) if w is not None]
                num_outputs = widths[0]

                def create(k: int = num_outputs) -> None:
                    _create_arrays(folder, storage, n, num_views, k)  # on disk; reopened below by every rank

                distributed.on_main(create)
                arrays = _open_arrays(folder, storage)
            else:
                num_outputs = next(o.shape[1] for o in outs if o is not None)
                arrays = _create_arrays(folder, storage, n, num_views, num_outputs)
        if writes:
            for j, got in enumerate(outs):
                if got is not None:
                    v, idx = work[first + j]
                    _write_rows(arrays, storage, got, idx, v)
        late = time.monotonic() - last_flush > flush_seconds
        if shared:
            late = bool(distributed.broadcast_object(late))  # rank 0's clock: every rank flushes together
        if late:
            flush(min(first + world, total))
            last_flush = time.monotonic()
    bar.close()
    if line.lines:
        line.close()
    if writes:
        flush(total)
    return computed, distributed.broadcast_object(num_outputs)


def _create_arrays(folder: Path, storage: Storage, n: int, num_views: int, num_outputs: int) -> list[np.ndarray | None]:
    """The entry's arrays for `num_outputs` outputs per view, created on disk (one process)."""
    width = num_outputs if storage.format == "full" else min(storage.k, num_outputs)
    values = np.lib.format.open_memmap(folder / "values.npy", "w+", np.float16, (n, num_views, width))
    indices = None
    if storage.format == "topk":
        _, sample_idx = compress_topk(torch.zeros(1, num_outputs), storage.k, storage.temperature)
        indices = np.lib.format.open_memmap(folder / "indices.npy", "w+", sample_idx.dtype, (n, num_views, width))
    return [values, indices]


def _open_arrays(folder: Path, storage: Storage) -> list[np.ndarray | None]:
    values = np.load(folder / "values.npy", mmap_mode="r+")
    return [values, np.load(folder / "indices.npy", mmap_mode="r+") if storage.format == "topk" else None]


def _write_rows(arrays: list[np.ndarray | None], storage: Storage, got: torch.Tensor, idx: torch.Tensor, v: int) -> None:
    """Store float32 outputs `[b, K]` of images `idx` seen as view `v`."""
    values, indices = arrays
    rows = idx.numpy()
    if storage.format == "full":
        values[rows, v] = got.numpy().astype(np.float16)  # type: ignore[index]
    else:
        vals, ids = compress_topk(got, storage.k, storage.temperature)
        values[rows, v], indices[rows, v] = vals, ids  # type: ignore[index]
