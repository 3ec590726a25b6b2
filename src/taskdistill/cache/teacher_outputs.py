"""Teacher outputs computed once per (teacher weights, transfer set, transform, views, storage) and kept on disk.

The key hashes everything that changes the stored numbers, so a rerun or another method reuses them and
a stale cache is never read: change the teacher, the images, the resolution, the views or the storage
format and the key changes. Layout under `<cache_dir>/teacher_outputs/`:

    <key>/values.npy    float16 [N, V, K] logits or features ("full"), or [N, V, k] probabilities ("topk")
    <key>/indices.npy   int16/int32 [N, V, k] class indices ("topk" only)
    <key>/meta.json     what was stored, how long it took, and each array's shape, size and CRC32
    <key>.partial/      a build in progress: the same arrays plus progress.json; an interrupted build
                        continues from its last recorded batch, and is renamed to <key>/ when complete

An entry is checked whenever it is opened (`entry_integrity.entry_problem`): a missing, truncated, unreadable or changed
array, an unreadable meta.json, or NaN/inf values are named in one line on stderr, and the entry is deleted
and rebuilt; a damaged entry never blocks a run. A build whose teacher gives NaN/inf is not cached at all.

Arrays are read memory-mapped: a batch gathers only its own rows. Under a process group the ranks split
the teacher's work and rank 0 writes (`build_teacher_outputs`); the result is byte-identical to one
process's build (same batches, same device type and thread count).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from taskdistill.cache.entry_integrity import array_records, discard, entry_problem, non_finite
from taskdistill.cache.soft_labels import bytes_per_view, compress_topk, expand_topk
from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import Views, model_input, replay_views
from taskdistill.engine import distributed
from taskdistill.engine.atomic import write_json
from taskdistill.engine.batches import EpochSampler, inference_batch_size
from taskdistill.errors import ConfigError, DataError
from taskdistill.folders import exclusive_lock

CACHE_FORMAT = "teacher-outputs/2"
OutputKind = str  # "logits" or "features" for a plain teacher; a teacher with `cache_outputs` names its own
StorageFormat = Literal["full", "topk"]


@dataclass(frozen=True)
class Storage:
    """How outputs are stored: `full` float16 values, or `topk` probabilities at `temperature` (k per view)."""

    format: StorageFormat = "full"
    k: int = 16
    temperature: float = 1.0

    def key_parts(self) -> dict[str, Any]:
        if self.format == "full":
            return {"format": "full"}
        return {"format": "topk", "k": self.k, "temperature": self.temperature}


class TeacherOutputs:
    """Stored teacher outputs for every (transfer image, view), memory-mapped.

    `gather(indices, views)` -> float32 `[B, K]`: logits/features for `full` storage, reconstructed
    probabilities for `topk` storage (`is_probabilities` tells which).
    """

    def __init__(self, values: np.ndarray, indices: np.ndarray | None, num_outputs: int,
                 temperature: float | None = None) -> None:
        self.values, self.indices = values, indices
        self.num_outputs = num_outputs
        self.temperature = temperature

    @classmethod
    def open(cls, folder: Path) -> TeacherOutputs:
        meta = json.loads((folder / "meta.json").read_text())
        values = np.load(folder / "values.npy", mmap_mode="r")
        indices = np.load(folder / "indices.npy", mmap_mode="r") if (folder / "indices.npy").is_file() else None
        return cls(values, indices, meta["num_outputs"], meta.get("temperature"))

    @classmethod
    def wrap(cls, outputs: TeacherOutputs | torch.Tensor) -> TeacherOutputs:
        """Accept an in-memory `[N, V, K]` tensor (logits or features) where stored outputs are expected."""
        if isinstance(outputs, TeacherOutputs):
            return outputs
        if outputs.ndim != 3:
            raise ValueError(f"teacher outputs must be [N, V, K], got {tuple(outputs.shape)}")
        return cls(outputs.detach().cpu().float().numpy(), None, outputs.shape[2])

    @property
    def is_probabilities(self) -> bool:
        return self.indices is not None

    @property
    def shape(self) -> tuple[int, int, int]:
        """`(N, V, K)`: images, views, outputs per view (classes or feature dimension)."""
        return (self.values.shape[0], self.values.shape[1], self.num_outputs)

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def bytes_per_view(self) -> int:
        row = self.values.dtype.itemsize * self.values.shape[2]
        return row + (self.indices.dtype.itemsize * self.indices.shape[2] if self.indices is not None else 0)

    def gather(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """float32 `[B, K]` for transfer images `indices` `[B]` seen as `views` `[B]`."""
        i, v = indices.cpu().numpy(), views.cpu().numpy()
        values = torch.from_numpy(np.asarray(self.values[i, v], dtype=np.float32))
        if self.indices is None:
            return values
        return expand_topk(values, self.indices[i, v], self.num_outputs)

    def dense(self) -> torch.Tensor:
        """Everything as one float32 `[N, V, K]` tensor (small sets and tests)."""
        n, v, _ = self.shape
        idx = torch.arange(n).repeat_interleave(v)
        return self.gather(idx, torch.arange(v).repeat(n)).reshape(n, v, -1)


def weights_hash(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (names, shapes, dtypes, bytes), in state-dict order."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _signature(teacher: nn.Module) -> dict[str, Any]:
    """What besides the weights shapes the teacher's outputs: its input transform (or its own account)."""
    if hasattr(teacher, "cache_signature"):
        return teacher.cache_signature()
    return {"preprocess": teacher.preprocess.to_dict()}


def cache_key(teacher: nn.Module, transfer: ImageSet, num_views: int, view_seed: int, kind: OutputKind = "logits",
              storage: Storage = Storage()) -> str:
    parts = {
        "format": CACHE_FORMAT,
        "kind": kind,
        "weights": weights_hash(teacher),
        "transfer": transfer.content_hash(),
        "teacher": _signature(teacher),
        "views": num_views,
        "view_seed": view_seed if num_views > 2 else None,  # views 0 and 1 do not depend on the seed
        "storage": storage.key_parts(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


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
                          storage: Storage = Storage(), flush_seconds: float = 10.0) -> tuple[int, int]:
    """Fill `folder` (a `<key>.partial` directory) with the teacher's outputs, continuing an earlier
    interrupted build. Returns (pairs of (image, view) computed in this call, outputs per view K).

    Progress is recorded (after the arrays are flushed) every `flush_seconds`, so a crash loses at most
    that much work and never leaves a batch counted that was not written.

    Under a process group the W ranks take the fixed work order W batches at a time (rank r runs batch
    `done + W * round + r`: the same batches, so the same numbers, as one process), the outputs are
    gathered, and rank 0 alone writes them. Progress counts batches of the one-process order, so a build
    interrupted under one world size continues under another.
    """
    teacher.eval()
    writer, rank, world = distributed.is_main(), distributed.rank(), distributed.world_size()
    progress_path = folder / "progress.json"
    progress = distributed.on_main(lambda: _read_progress(folder, batch_size, storage))
    done, num_outputs = progress.get("done_batches", 0), progress.get("num_outputs", 0)
    n = len(transfer)
    work = _work(n, num_views, batch_size)
    total = len(work)
    values = indices = None
    if done and writer:
        values = np.load(folder / "values.npy", mmap_mode="r+")
        indices = np.load(folder / "indices.npy", mmap_mode="r+") if storage.format == "topk" else None
    computed, last_flush = 0, time.monotonic()

    def flush(count: int) -> None:
        for arr in (values, indices):
            if arr is not None:
                arr.flush()
        write_json(progress_path, {"done_batches": count, "total_batches": total, "batch_size": batch_size,
                                   "num_outputs": num_outputs})

    bar = tqdm(total=n * num_views, desc=f"teacher {kind}", unit="img", leave=False, mininterval=1.0,
               disable=None if writer else True)
    bar.update(sum(len(idx) for _, idx in work[:done]))
    for first in range(done, total, world):
        out = None
        if first + rank < total:
            v, idx = work[first + rank]
            views = replay_views(idx, torch.full_like(idx, v), view_seed)
            out = teacher_forward(teacher, transfer.images[idx].to(device), views, kind).float().cpu()
        outs = _gather_outputs(out)
        computed += sum(len(o) for o in outs if o is not None)
        bar.update(sum(len(o) for o in outs if o is not None))
        if not writer:
            continue
        for j, got in enumerate(outs):
            if got is None:
                continue
            v, idx = work[first + j]
            if values is None:
                num_outputs = got.shape[1]
                width = num_outputs if storage.format == "full" else min(storage.k, num_outputs)
                values = np.lib.format.open_memmap(folder / "values.npy", "w+", np.float16, (n, num_views, width))
                if storage.format == "topk":
                    _, sample_idx = compress_topk(got[:1], storage.k, storage.temperature)
                    indices = np.lib.format.open_memmap(folder / "indices.npy", "w+", sample_idx.dtype,
                                                        (n, num_views, width))
            rows = idx.numpy()
            if storage.format == "full":
                values[rows, v] = got.numpy().astype(np.float16)
            else:
                vals, ids = compress_topk(got, storage.k, storage.temperature)
                values[rows, v], indices[rows, v] = vals, ids
        if time.monotonic() - last_flush > flush_seconds:
            flush(min(first + world, total))
            last_flush = time.monotonic()
    bar.close()
    if writer:
        flush(total)
    return computed, distributed.broadcast_object(num_outputs)


def _usable(final: Path) -> bool:
    """True when a sound finished entry is at `final`; a damaged one is named on stderr and removed (rank 0)."""
    if not final.exists():
        return False
    problem = entry_problem(final)
    if problem is None:
        return True
    print(f"teacher-output cache entry {final} is damaged ({problem}); deleting it and rebuilding it",
          file=sys.stderr, flush=True)
    discard(final)
    return False


def _finish_build(partial: Path, final: Path, meta: dict[str, Any]) -> None:
    """Check the finished `<key>.partial`, record its arrays in meta.json and rename it to `<key>` (rank 0).
    Outputs with NaN/inf are not cached: DataError."""
    values = np.load(partial / "values.npy", mmap_mode="r")
    bad, total = non_finite(values), values.size
    del values
    if bad:
        shutil.rmtree(partial, ignore_errors=True)
        raise DataError(
            f"the teacher's {meta['kind']} outputs on the transfer set hold {bad} NaN/inf value(s) of {total}, so "
            f"they were not cached. The teacher's weights are not finite (a diverged finetune: lower "
            f"teacher.train.lr) or its outputs overflow float16; check the teacher checkpoint")
    write_json(partial / "meta.json", {**meta, "arrays": array_records(partial)})
    (partial / "progress.json").unlink(missing_ok=True)
    if final.exists() and entry_problem(final) is None:  # a concurrent build finished first; keep one
        shutil.rmtree(partial)
        return
    if final.exists():
        discard(final)
    os.replace(partial, final)


def cached_teacher_outputs(teacher: nn.Module, transfer: ImageSet, num_views: int, view_seed: int,
                           cache_dir: str | Path, batch_size: int = 256, device: torch.device | str = "cpu",
                           kind: OutputKind = "logits", storage: Storage = Storage()) -> tuple[TeacherOutputs, dict]:
    """The teacher's outputs for every view of every transfer image, from the cache or built (resumably).

    Returns the outputs and an info dict: `key`, `hit` (bool), `seconds`, `teacher_images` (forward
    passes in this call), `bytes_per_view`, `path`.
    """
    if not isinstance(transfer, ImageSet):
        raise ConfigError(f"teacher outputs are cached for an in-memory transfer set, got a {type(transfer).__name__}; "
                          f"a streamed (wds:) transfer set runs the teacher on the fly and works with the task-oriented "
                          f"distill stage only. Use distill.transfer.source=unlabeled or a manifest for this method")
    key = cache_key(teacher, transfer, num_views, view_seed, kind, storage)
    root = Path(cache_dir) / "teacher_outputs"
    final, partial = root / key, root / f"{key}.partial"
    # one builder per entry: another process asking for the same outputs waits, then reads them (rank 0 locks)
    lock = exclusive_lock(root / f"{key}.lock", f"the teacher-output cache {final}") if distributed.is_main() \
        else contextlib.nullcontext()
    with lock:
        hit = distributed.on_main(lambda: _usable(final))
        seconds, computed = 0.0, 0
        if not hit:
            start = time.perf_counter()
            size = getattr(getattr(teacher, "preprocess", None), "input_size", 0)
            computed, num_outputs = build_teacher_outputs(teacher, transfer, num_views, view_seed, partial,
                                                          inference_batch_size(batch_size, size, device), device, kind,
                                                          storage)
            seconds = time.perf_counter() - start
            meta = {
                "format": CACHE_FORMAT, "key": key, "kind": kind, "num_images": len(transfer), "num_views": num_views,
                "num_outputs": num_outputs, "storage": storage.key_parts(),
                "temperature": storage.temperature if storage.format == "topk" else None,
                "teacher": teacher.spec.to_dict() if hasattr(teacher, "spec") else type(teacher).__name__,
                "seconds": seconds}
            distributed.on_main(lambda: _finish_build(partial, final, meta))
    distributed.check_visible(final / "meta.json", "teacher-output cache")
    outputs = TeacherOutputs.open(final)
    if outputs.shape[:2] != (len(transfer), num_views):  # the key covers both: only a hash collision gets here
        raise DataError(f"teacher-output cache {final} holds {outputs.shape[:2]}, expected "
                        f"{(len(transfer), num_views)}; delete it")
    return outputs, {"key": key, "hit": hit, "seconds": round(seconds, 2), "teacher_images": computed,
                     "bytes_per_view": outputs.bytes_per_view,
                     "expected_bytes_per_view": bytes_per_view(outputs.num_outputs,
                                                               None if storage.format == "full" else storage.k),
                     "path": str(final)}
