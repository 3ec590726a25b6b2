"""Top-k compressed soft labels: keep the k most likely classes, spread the rest of the mass uniformly.

A view's teacher distribution at temperature T, `p = softmax(z / T)` over K classes, is stored as the
k largest probabilities (float16) and their class indices (int16 when K <= 32767, else int32). The
reconstruction gives every other class the same share of what is left:

    p_hat[i] = p[i]                                   for the k stored classes
    p_hat[j] = (1 - sum of stored p) / (K - k)        for the others

so `p_hat` sums to one and keeps the teacher's ranking of its top k. Bytes per view: k * (2 + 2 or 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch


def index_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.int16) if num_classes <= np.iinfo(np.int16).max else np.dtype(np.int32)


def bytes_per_view(num_classes: int, k: int | None) -> int:
    """Stored bytes for one view: float16 logits (`k=None`) or top-k values + indices."""
    if k is None:
        return 2 * num_classes
    k = min(k, num_classes)
    return k * (2 + index_dtype(num_classes).itemsize)


def compress_topk(logits: torch.Tensor, k: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """`[M, K]` logits -> (`[M, k]` float16 probabilities at `temperature`, `[M, k]` int16/int32 indices)."""
    num_classes = logits.shape[-1]
    k = min(k, num_classes)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    values, indices = probs.topk(k, dim=-1)
    return values.half().numpy(), indices.numpy().astype(index_dtype(num_classes))


def expand_topk(values: torch.Tensor | np.ndarray, indices: torch.Tensor | np.ndarray, num_classes: int) -> torch.Tensor:
    """Reconstruct `[..., K]` float32 probabilities from `[..., k]` top-k values and indices."""
    v = torch.as_tensor(values).float()
    i = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    k = v.shape[-1]
    if k >= num_classes:
        out = torch.zeros((*v.shape[:-1], num_classes), dtype=torch.float32)
        return out.scatter_(-1, i, v)
    rest = (1.0 - v.sum(-1, keepdim=True)).clamp_min(0.0) / (num_classes - k)
    out = rest.expand(*v.shape[:-1], num_classes).clone()
    return out.scatter_(-1, i, v)


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


FULL_STORAGE = Storage()  # the default: float16 values of every output
