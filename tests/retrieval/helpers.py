"""Toy data for the retrieval tests: distinct smooth images, hand-made embeddings, tar shards."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from taskdistill.data.image_set import ImageSet
from taskdistill.retrieval.embed import Embeddings


def blob_image(rng: np.random.Generator, size: int = 24) -> np.ndarray:
    """A distinct RGB image `[size, size, 3]` uint8: a few coloured Gaussian blobs on a random gradient."""
    yy, xx = np.mgrid[:size, :size] / size
    img = np.zeros((size, size, 3)) + rng.uniform(0, 80, 3) + rng.uniform(-60, 60, 3) * xx[..., None]
    for _ in range(4):
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.25)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(-200, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_blobs(folder: Path, n: int, seed: int, size: int = 24) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"{i:03d}.png"
        Image.fromarray(blob_image(rng, size)).save(p)
        paths.append(p)
    return paths


def image_set(arrays: list[np.ndarray], ids: list[str], labels: list[int] | None = None,
              class_names: list[str] | None = None) -> ImageSet:
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images=images, labels=torch.tensor(labels if labels is not None else [-1] * len(arrays)),
                    ids=ids, class_names=class_names or ["a", "b"])


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def toy_embeddings(vectors: np.ndarray, sources: list[str] | None = None,
                   signatures: np.ndarray | None = None) -> Embeddings:
    """Embeddings from hand-made vectors; by default every image has its own orthogonal pixel signature."""
    n = len(vectors)
    sigs = np.eye(n, dtype=np.float32) if signatures is None else signatures.astype(np.float32)
    return Embeddings(vectors=unit(vectors), signatures=sigs, ids=[f"img{i}" for i in range(n)],
                      sources=sources or ["pool"] * n, locations=[f"/pool/img{i}.png" for i in range(n)],
                      meta={"pool_fingerprint": "toy", "weights_sha256": "toy", "count": n})


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_shard(path: Path, samples: list[tuple[str, np.ndarray, str | None]]) -> None:
    """A webdataset-style shard: `<key>.png` (+ `<key>.json` with the source when one is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, array, source in samples:
            members = [(f"{key}.png", png_bytes(array))]
            if source is not None:
                members.append((f"{key}.json", json.dumps({"source": source}).encode()))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
