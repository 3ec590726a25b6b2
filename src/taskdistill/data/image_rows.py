"""Images gathered by index: uint8 `[N, C, H, W]` rows of an array in memory or of an image store on disk.

An `ImageRows` is an index array over a backing array. Indexing it (`rows[idx]`) reads just those rows into a
new tensor; `select(idx)` makes another `ImageRows` over the same backing (no pixels copied). A store-backed
array reads rows with positioned reads (`os.preadv`) instead of a memory map, so pixels pass through the page
cache but never count in the process's resident memory: a run's RSS does not grow with the size of its sets.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

IndexLike = int | slice | torch.Tensor | np.ndarray | list[int] | range


class RowArray(Protocol):
    """A backing array of `shape[0]` uint8 rows of shape `shape[1:]` = `(C, H, W)`."""

    shape: tuple[int, int, int, int]

    def read(self, rows: np.ndarray) -> torch.Tensor:
        """uint8 `[len(rows), C, H, W]` (a new tensor) for int64 row numbers `rows`."""
        ...

    def fingerprint(self) -> str:
        """A string that changes whenever any row's pixels change."""
        ...


class TensorArray:
    """Rows of an in-memory uint8 tensor `[N, C, H, W]`."""

    def __init__(self, tensor: torch.Tensor) -> None:
        if tensor.dtype != torch.uint8 or tensor.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {tensor.dtype} {tuple(tensor.shape)}")
        self.tensor = tensor
        self.shape = tuple(tensor.shape)  # type: ignore[assignment]
        self._fingerprint: str | None = None

    def read(self, rows: np.ndarray) -> torch.Tensor:
        return self.tensor[torch.from_numpy(rows)]

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(str(self.shape).encode())
            h.update(np.ascontiguousarray(self.tensor.numpy()).tobytes())
            self._fingerprint = "pixels:" + h.hexdigest()
        return self._fingerprint


def _read_exact(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        n = os.preadv(fd, [view], offset)
        if n <= 0:
            raise OSError(f"unexpected end of image store file at byte {offset}")
        view, offset = view[n:], offset + n


class FileArray:
    """Rows of a raw uint8 array in a file (an image store's `pixels.npy`), read by positioned reads.

    `key` names the content (the store key), so the fingerprint costs nothing. The file descriptor is opened
    lazily in each process (safe to pickle into worker processes and across `fork`).
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, int, int, int], key: str) -> None:
        self.path, self.offset, self.shape, self.key = Path(path), int(offset), tuple(shape), key  # type: ignore[assignment]
        self.row_bytes = int(np.prod(self.shape[1:]))
        self._fd: int | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def read(self, rows: np.ndarray) -> torch.Tensor:
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)
        if len(rows) == 0:
            return torch.from_numpy(out)
        fd, rb = self._descriptor(), self.row_bytes
        flat = memoryview(out.reshape(-1))
        # consecutive row numbers are read with one call (evaluation and cache builds read in order)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [len(rows)]))
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            _read_exact(fd, flat[s * rb:e * rb], self.offset + int(rows[s]) * rb)
        return torch.from_numpy(out)

    def fingerprint(self) -> str:
        return "store:" + self.key


def _as_rows(key: IndexLike, n: int) -> np.ndarray:
    """Positions `[B]` (int64, in range) for an index of any supported kind."""
    if isinstance(key, slice):
        return np.arange(n, dtype=np.int64)[key]
    if isinstance(key, tuple):
        raise TypeError("ImageRows takes one index (rows); index the returned tensor for more, e.g. rows[idx][:, 0]")
    if isinstance(key, range):
        key = list(key)
    arr = key.cpu().numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
    if arr.dtype == np.bool_:
        if arr.shape != (n,):
            raise IndexError(f"boolean mask of shape {arr.shape} does not match {n} images")
        return np.flatnonzero(arr).astype(np.int64)
    arr = arr.astype(np.int64, copy=False).reshape(-1)
    if len(arr) and (arr.min() < -n or arr.max() >= n):
        raise IndexError(f"image index out of range for {n} images")
    return np.where(arr < 0, arr + n, arr)


class ImageRows:
    """uint8 images `[N, C, H, W]` gathered by index from a backing array; no pixels are held here."""

    def __init__(self, array: RowArray | torch.Tensor, index: np.ndarray | None = None) -> None:
        self.array: RowArray = TensorArray(array) if isinstance(array, torch.Tensor) else array
        self.index = None if index is None else np.ascontiguousarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return self.array.shape[0] if self.index is None else len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.array.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    @property
    def ndim(self) -> int:
        return 4

    def _backing_rows(self, positions: np.ndarray) -> np.ndarray:
        return positions if self.index is None else self.index[positions]

    def __getitem__(self, key: IndexLike) -> torch.Tensor:
        """`rows[i]` -> `[C, H, W]`; `rows[idx]` (slice, list, array, tensor, mask) -> `[B, C, H, W]`."""
        if isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.ndim == 0):
            i = int(key)
            return self.array.read(self._backing_rows(_as_rows([i], len(self))))[0]
        return self.array.read(self._backing_rows(_as_rows(key, len(self))))

    def select(self, key: IndexLike) -> ImageRows:
        """The rows at `key`, as another `ImageRows` over the same backing array (nothing is read)."""
        return ImageRows(self.array, self._backing_rows(_as_rows(key, len(self))))

    def tensor(self) -> torch.Tensor:
        """Every row as one tensor `[N, C, H, W]` (for small sets and tests)."""
        return self[:]

    def fingerprint(self) -> str:
        """sha256 over the backing array's fingerprint and the index: changes when content or order changes."""
        h = hashlib.sha256(self.array.fingerprint().encode())
        h.update(str(tuple(self.shape)).encode())
        if self.index is not None:
            h.update(self.index.tobytes())
        return h.hexdigest()


# What set-level functions (evaluation, linear probes, embedding) accept: rows gathered by index, or a tensor.
Images = ImageRows | torch.Tensor


def take(images: Images, rows: torch.Tensor) -> Images:
    """Some rows of `images` without reading them where that is possible (an `ImageRows` selection)."""
    return images.select(rows) if isinstance(images, ImageRows) else images[rows]
