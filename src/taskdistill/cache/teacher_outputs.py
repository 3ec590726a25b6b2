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
the teacher's work; on one node each rank writes its own rows into the shared memory-mapped arrays (nothing
is gathered into one process), across nodes rank 0 gathers and writes (`build_teacher_outputs`); the result
is byte-identical to one process's build (same batches, same device type and thread count).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from taskdistill import distributed
from taskdistill.atomic import write_json
from taskdistill.cache.entry_integrity import array_records, discard, entry_problem, non_finite
from taskdistill.cache.soft_labels import FULL_STORAGE, Storage, StorageFormat, bytes_per_view, expand_topk
from taskdistill.cache.teacher_build import OutputKind, build_teacher_outputs, teacher_forward
from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import Views
from taskdistill.engine.inference import BatchSize, resolve_batch_size
from taskdistill.engine.precision import resolve_precision
from taskdistill.errors import ConfigError, DataError
from taskdistill.folders import exclusive_lock

CACHE_FORMAT = "teacher-outputs/2"
__all__ = ["CACHE_FORMAT", "OutputKind", "Storage", "StorageFormat", "TeacherOutputs", "build_teacher_outputs",
           "cache_key", "cached_teacher_outputs", "teacher_forward", "weights_hash"]


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
              storage: Storage = FULL_STORAGE, precision: str = "fp32") -> str:
    """The entry's name: a hash of everything that changes the stored numbers. A reduced `precision` (bf16,
    fp16) is part of it; fp32 adds nothing, so fp32 keys are those of caches built before precision existed."""
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
    if precision != "fp32":
        parts["precision"] = precision
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


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
                           cache_dir: str | Path, batch_size: BatchSize = 256, device: torch.device | str = "cpu",
                           kind: OutputKind = "logits", storage: Storage = FULL_STORAGE, precision: str = "fp32",
                           compile: bool = False) -> tuple[TeacherOutputs, dict]:
    """The teacher's outputs for every view of every transfer image, from the cache or built (resumably).

    `precision` (`auto | fp32 | bf16 | fp16`, resolved for `device`) is the teacher's inference precision and part
    of the key when not fp32; `batch_size="auto"` finds the largest batch that fits on a GPU (`engine.inference`);
    `compile=True` runs the teacher's forward through torch.compile while the entry is built.

    Returns the outputs and an info dict: `key`, `hit` (bool), `seconds`, `teacher_images` (forward
    passes in this call), `bytes_per_view`, `path`.
    """
    if not isinstance(transfer, ImageSet):
        raise ConfigError(f"teacher outputs are cached for an in-memory transfer set, got a {type(transfer).__name__}; "
                          f"a streamed (wds:) transfer set runs the teacher on the fly and works with the task-oriented "
                          f"distill stage only. Use distill.transfer.source=unlabeled or a manifest for this method")
    precision = resolve_precision(precision, device)
    key = cache_key(teacher, transfer, num_views, view_seed, kind, storage, precision)
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
            def probe(x: torch.Tensor, views: Views | None) -> torch.Tensor:
                return teacher_forward(teacher, x, views or Views.plain(len(x)), kind)

            teacher.eval()  # the auto-batch probe must not move batch-norm statistics
            # every rank the same batch: it sets the work split and the number of collective rounds
            size = distributed.broadcast_object(
                resolve_batch_size(batch_size, teacher, probe, transfer.images, device, precision))
            compiled = compile and isinstance(teacher, nn.Module)
            if compiled:
                teacher.compile()
            try:
                computed, num_outputs = build_teacher_outputs(teacher, transfer, num_views, view_seed, partial, size,
                                                              device, kind, storage, precision=precision)
            finally:
                if compiled:
                    teacher._compiled_call_impl = None  # back to eager
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
