"""Teacher outputs computed once per (teacher weights, transfer set, transform, views) and kept on disk.

The key hashes everything that changes the outputs, so a rerun or another method reuses them and a
stale cache is never read: change the teacher, the images, the resolution or the views and the key
changes. Files: `<cache_dir>/teacher_outputs/<key>.npy` (float16 `[N, V, K]`) and `<key>.json`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import model_input, replay_views
from taskdistill.engine.atomic import atomic_path, write_json
from taskdistill.engine.batches import EpochSampler

CACHE_FORMAT = "teacher-outputs/1"
OutputKind = Literal["logits", "features"]


def weights_hash(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (names, shapes, dtypes, bytes), in state-dict order."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(teacher: nn.Module, transfer: ImageSet, num_views: int, view_seed: int, kind: OutputKind = "logits") -> str:
    parts = {
        "format": CACHE_FORMAT,
        "kind": kind,
        "weights": weights_hash(teacher),
        "transfer": transfer.content_hash(),
        "preprocess": teacher.preprocess.to_dict(),
        "views": num_views,
        "view_seed": view_seed if num_views > 2 else None,  # views 0 and 1 do not depend on the seed
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


@torch.inference_mode()
def compute_teacher_logits(teacher: nn.Module, transfer: ImageSet, num_views: int, view_seed: int,
                           batch_size: int = 256, device: torch.device | str = "cpu",
                           kind: OutputKind = "logits") -> torch.Tensor:
    """Teacher outputs for every view of every transfer image: `[N, V, K]` logits, or `[N, V, D]` pooled
    features (`kind="features"`, the input of the classifier), float32."""
    teacher.eval()
    n = len(transfer)
    sampler = EpochSampler(n, batch_size, shuffle=False)
    out: torch.Tensor | None = None
    bar = tqdm(total=n * num_views, desc=f"teacher {kind}", unit="img", leave=False, mininterval=1.0, disable=None)
    for v in range(num_views):
        for idx in sampler:
            views = replay_views(idx, torch.full_like(idx, v), view_seed)
            x = model_input(transfer.images[idx].to(device), teacher.preprocess, views)
            if kind == "features":
                logits = teacher.forward_head(teacher.forward_features(x), pre_logits=True).float().cpu()
            else:
                logits = teacher(x).float().cpu()
            if out is None:
                out = torch.empty((n, num_views, logits.shape[1]), dtype=torch.float32)
            out[idx, v] = logits
            bar.update(len(idx))
    bar.close()
    assert out is not None
    return out


def cached_teacher_logits(teacher: nn.Module, transfer: ImageSet, num_views: int, view_seed: int, cache_dir: str | Path,
                          batch_size: int = 256, device: torch.device | str = "cpu",
                          kind: OutputKind = "logits") -> tuple[torch.Tensor, dict]:
    """Load the teacher's `[N, V, K]` outputs (or `[N, V, D]` features) from the cache, or compute and store them.

    Returns the logits and an info dict: `key`, `hit` (bool), `seconds`, `teacher_images` (forward passes).
    """
    key = cache_key(teacher, transfer, num_views, view_seed, kind)
    folder = Path(cache_dir) / "teacher_outputs"
    data_path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    if data_path.is_file() and meta_path.is_file():
        arr = np.load(data_path, mmap_mode="r")
        if arr.shape[:2] == (len(transfer), num_views):
            return torch.from_numpy(np.asarray(arr, dtype=np.float32)), {
                "key": key, "hit": True, "seconds": 0.0, "teacher_images": 0, "path": str(data_path)}
    start = time.perf_counter()
    logits = compute_teacher_logits(teacher, transfer, num_views, view_seed, batch_size, device, kind)
    seconds = time.perf_counter() - start
    with atomic_path(data_path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, logits.numpy().astype(np.float16))
    write_json(meta_path, {"format": CACHE_FORMAT, "key": key, "shape": list(logits.shape),
                           "teacher": teacher.spec.to_dict(), "kind": kind, "num_views": num_views, "seconds": seconds})
    # Hand back what a later hit would read, so both paths train on identical (float16-rounded) targets.
    logits = logits.half().float()
    return logits, {"key": key, "hit": False, "seconds": seconds, "teacher_images": len(transfer) * num_views,
                    "path": str(data_path)}
