"""The seeded few-shot sampler: labeled / validation / unlabeled index splits of a labeled pool."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from taskdistill.errors import DataError


@dataclass(frozen=True)
class FewShotSplit:
    """Indices into the pool: `labeled` (train), `val` (carved from the labeled budget), `unlabeled` (the rest)."""

    labeled: torch.Tensor
    val: torch.Tensor
    unlabeled: torch.Tensor


def few_shot_split(
    labels: torch.Tensor,
    class_names: list[str],
    seed: int,
    labels_per_class: int | None = None,
    max_per_class: int | None = None,
    label_fraction: float | None = None,
    val_per_class: int = 0,
) -> FewShotSplit:
    """Pick a label budget per class, deterministically from `seed`.

    Exactly one budget rule applies: `labels_per_class` (exactly k per class; a class with fewer is an
    error), `max_per_class` (up to k), or `label_fraction` (ceil of a share, at least 1). `val_per_class`
    images per class are taken from the budget for validation. The unlabeled part is every image not
    picked, in pool order.
    """
    rules = {k: v for k, v in (("labels_per_class", labels_per_class), ("max_per_class", max_per_class),
                               ("label_fraction", label_fraction)) if v is not None}
    if len(rules) != 1:
        names = ", ".join(f"data.{k}" for k in rules) or "none"
        raise DataError(
            f"set exactly one label budget (data.labels_per_class, data.max_per_class or data.label_fraction); "
            f"set now: {names}. Clear the others with e.g. --set data.labels_per_class=null"
        )
    if labels_per_class is not None and labels_per_class < 1:
        raise DataError(f"data.labels_per_class must be >= 1, got {labels_per_class}")
    if max_per_class is not None and max_per_class < 1:
        raise DataError(f"data.max_per_class must be >= 1, got {max_per_class}")
    if label_fraction is not None and not 0.0 < label_fraction <= 1.0:
        raise DataError(f"data.label_fraction must be in (0, 1], got {label_fraction}")
    if val_per_class < 0:
        raise DataError(f"data.val_per_class must be >= 0, got {val_per_class}")

    gen = torch.Generator().manual_seed(int(seed))
    labeled, val = [], []
    for c, name in enumerate(class_names):
        members = torch.nonzero(labels == c).flatten()
        n = len(members)
        if labels_per_class is not None:
            budget = labels_per_class
            if budget > n:
                raise DataError(
                    f"class '{name}' has {n} labeled image(s), fewer than data.labels_per_class={budget}. "
                    f"Lower the budget, or use data.max_per_class={budget} to take all of a smaller class."
                )
        elif max_per_class is not None:
            budget = min(max_per_class, n)
        else:
            budget = min(n, max(1, math.ceil(label_fraction * n)))  # type: ignore[operator]
        if budget == 0:
            raise DataError(f"class '{name}' has no labeled images")
        if val_per_class >= budget:
            raise DataError(
                f"class '{name}': data.val_per_class={val_per_class} leaves no training labels out of {budget}; "
                f"lower data.val_per_class"
            )
        picked = members[torch.randperm(n, generator=gen)[:budget]]
        val.append(picked[:val_per_class])
        labeled.append(picked[val_per_class:])
    labeled_idx = torch.sort(torch.cat(labeled)).values
    val_idx = torch.sort(torch.cat(val)).values
    taken = torch.zeros(len(labels), dtype=torch.bool)
    taken[labeled_idx] = True
    taken[val_idx] = True
    return FewShotSplit(labeled=labeled_idx, val=val_idx, unlabeled=torch.nonzero(~taken).flatten())
