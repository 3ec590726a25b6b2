"""Torch-free parts of curation: the near-duplicate rule, queries and guard sets, and the pickers that walk
ranked lists (round robin per query, or one global order) through a deduplicator.

`curate` (in-memory pools) and `web_curate` (clip-retrieval pools of any size) share them; this module imports
no torch, so a web-scale curation process stays small.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Dedup(Protocol):
    """Accepts candidate rows in order (`curate.Deduper`, `dedup.IndexedDeduper`)."""

    count: int
    rejected: int

    def accept(self, rows: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class DupRule:
    """When two images count as near-duplicates (see the module doc)."""

    sig_threshold: float = 0.98
    emb_threshold: float = 0.96
    sig_floor: float = 0.93

    def __call__(self, emb_cos: np.ndarray, sig_cos: np.ndarray) -> np.ndarray:
        return (sig_cos >= self.sig_threshold) | ((emb_cos >= self.emb_threshold) & (sig_cos >= self.sig_floor))


DEFAULT_RULE = DupRule()


@dataclass
class Queries:
    """Query vectors `[Q, D]` (unit norm), their class `labels [Q]` and printable `names`."""

    vectors: np.ndarray
    labels: np.ndarray
    names: list[str]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class GuardSet:
    """Images that must not leak into the transfer set: embeddings `[G, D]`, signatures `[G, SIG_DIM]`, ids."""

    vectors: np.ndarray
    signatures: np.ndarray
    ids: list[str]


def ordered_pick(order: np.ndarray, n: int, eligible: np.ndarray, taken: np.ndarray, dedup: Dedup,
                  on_pick: Callable[[int], None]) -> None:
    """Walk pool rows in `order`, accepting eligible, untaken, non-duplicate ones until `n` are picked in all."""
    pos = 0
    while dedup.count < n and pos < len(order):
        chunk = order[pos:pos + min(2048, max(64, 2 * (n - dedup.count)))]
        pos += len(chunk)
        chunk = chunk[eligible[chunk] & ~taken[chunk]]
        for r, ok in zip(chunk.tolist(), dedup.accept(chunk).tolist(), strict=True):
            taken[r] = True  # a rejected duplicate stays out for good: the kept set only grows
            if ok:
                on_pick(r)


def balanced_pick(lists: Sequence[np.ndarray], list_scores: Sequence[np.ndarray], quotas: Sequence[int],
                   eligible: np.ndarray, taken: np.ndarray, dedup: Dedup,
                   on_pick: Callable[[int, int, float], None]) -> None:
    """Round robin over ranked lists: each round, every list short of its quota proposes its best untaken row."""
    ptr = [0] * len(lists)
    got = [0] * len(lists)
    while True:
        props: list[tuple[int, int, float]] = []
        proposed: set[int] = set()
        for q, rows in enumerate(lists):
            if got[q] >= quotas[q]:
                continue
            while ptr[q] < len(rows):
                r = int(rows[ptr[q]])
                if r >= 0 and eligible[r] and not taken[r] and r not in proposed:
                    break
                ptr[q] += 1
            if ptr[q] < len(rows):
                props.append((q, r, float(list_scores[q][ptr[q]])))
                proposed.add(r)
                ptr[q] += 1
        if not props:
            return
        ok = dedup.accept(np.array([r for _, r, _ in props], dtype=np.int64))
        for (q, r, s), accepted in zip(props, ok.tolist(), strict=True):
            taken[r] = True
            if accepted:
                got[q] += 1
                on_pick(r, q, s)


def quotas(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]
