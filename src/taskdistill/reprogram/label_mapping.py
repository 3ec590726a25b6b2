"""Output-side reprogramming: from the teacher's source classes to the target task's classes.

- `frequency_label_mapping` (FLM): a fixed one-to-one map target class -> source class, chosen greedily
  from how often the (prompted) teacher predicts each source class on each target class's images.
- `iterative_label_mapping` (ILM): the same, recomputed with the current prompt; the caller decides when.
- `MappedHead`: applies a fixed map (no parameters). `LinearLabelMap`: a learned linear map instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def _pair_scores(source_probs: torch.Tensor, labels: torch.Tensor, num_target: int) -> torch.Tensor:
    """`[T, S]` float64 scores: argmax counts, with summed probability as a tie-breaker below one count.

    count[t, s] = #{n : labels[n] = t and argmax_j source_probs[n, j] = s}
    mass[t, s]  = sum over {n : labels[n] = t} of source_probs[n, s]
    score       = count + mass / (N + 1)
    mass[t, s] <= N, so mass / (N + 1) < 1 and a higher count always wins; equal counts (notably the
    many zero counts of a few-shot set) are ordered by probability mass instead of by index.
    """
    n, num_source = source_probs.shape
    probs = source_probs.detach().to("cpu", torch.float64)
    labels = labels.detach().to("cpu", torch.long)
    counts = torch.zeros(num_target, num_source, dtype=torch.float64)
    counts.index_put_((labels, probs.argmax(1)), torch.ones(n, dtype=torch.float64), accumulate=True)
    mass = torch.zeros(num_target, num_source, dtype=torch.float64).index_add_(0, labels, probs)
    return counts + mass / (n + 1)


def frequency_label_mapping(source_probs: torch.Tensor, labels: torch.Tensor, num_target: int) -> torch.Tensor:
    """Greedy one-to-one FLM: `source_probs` `[N, S]`, `labels` `[N]` in [0, T) -> mapping `[T]` (long).

    Repeatedly takes the (target t, source s) pair with the highest score (see `_pair_scores`: the
    number of t's images whose top source class is s, ties broken by summed probability of s over t's
    images, remaining exact ties by lowest t then lowest s), sets mapping[t] = s, and removes row t and
    column s. Every target gets a distinct source class, including targets with no images.
    """
    if source_probs.ndim != 2 or labels.ndim != 1 or len(labels) != len(source_probs):
        raise ValueError(f"need source_probs [N, S] and labels [N], got {tuple(source_probs.shape)} "
                         f"and {tuple(labels.shape)}")
    num_source = source_probs.shape[1]
    if not 0 < num_target <= num_source:
        raise ValueError(f"a one-to-one map needs 0 < num_target <= num_source ({num_source}), got {num_target}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_target):
        raise ValueError(f"labels must lie in [0, {num_target}), got [{int(labels.min())}, {int(labels.max())}]")
    score = _pair_scores(source_probs, labels, num_target)
    mapping = torch.empty(num_target, dtype=torch.long)
    for _ in range(num_target):
        flat = int(score.argmax())  # first maximum in row-major order: lowest t, then lowest s
        t, s = divmod(flat, num_source)
        mapping[t] = s
        score[t, :] = float("-inf")
        score[:, s] = float("-inf")
    return mapping


class MappedHead(nn.Module):
    """Fixed label map: source logits `[B, S]` -> target logits `[B, T]` = `source_logits[:, mapping]`.

    `mapping` `[T]` is a buffer (saved in the state dict, moved with `.to()`), not a parameter.
    """

    mapping: torch.Tensor

    def __init__(self, mapping: torch.Tensor | Sequence[int], num_source: int | None = None) -> None:
        super().__init__()
        self.num_source = num_source
        self.register_buffer("mapping", self._checked(mapping))

    def _checked(self, mapping: torch.Tensor | Sequence[int]) -> torch.Tensor:
        m = torch.as_tensor(mapping, dtype=torch.long).detach().clone()
        if m.ndim != 1 or len(m) == 0 or int(m.min()) < 0:
            raise ValueError(f"mapping must be a non-empty 1-d tensor of source indices, got {m.tolist()}")
        if self.num_source is not None and int(m.max()) >= self.num_source:
            raise ValueError(f"mapping refers to source class {int(m.max())} of {self.num_source}")
        return m

    @property
    def num_target(self) -> int:
        return len(self.mapping)

    def set_mapping(self, mapping: torch.Tensor | Sequence[int]) -> None:
        """Replace the map (e.g. after an ILM update), keeping the buffer's device."""
        self.mapping = self._checked(mapping).to(self.mapping.device)

    def forward(self, source_logits: torch.Tensor) -> torch.Tensor:
        """`[B, S]` -> `[B, T]`."""
        return source_logits.index_select(1, self.mapping)


class LinearLabelMap(nn.Module):
    """Learned map `[B, S]` (source logits, or teacher features) -> `[B, T]`: `x @ W^T + b`.

    `init_mapping` `[T]` starts it as that fixed map (W one-hot rows, b = 0), so training begins from FLM;
    without it W and b get PyTorch's default Linear initialisation.
    """

    def __init__(self, in_features: int, num_target: int, bias: bool = True,
                 init_mapping: torch.Tensor | Sequence[int] | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_target, bias=bias)
        if init_mapping is not None:
            m = torch.as_tensor(init_mapping, dtype=torch.long)
            if m.shape != (num_target,) or int(m.min()) < 0 or int(m.max()) >= in_features:
                raise ValueError(f"init_mapping must be [{num_target}] indices below {in_features}")
            with torch.no_grad():
                self.linear.weight.zero_()
                self.linear.weight[torch.arange(num_target), m] = 1.0
                if self.linear.bias is not None:
                    self.linear.bias.zero_()

    @property
    def num_target(self) -> int:
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, S]` -> `[B, T]`."""
        return self.linear(x)


def iterative_label_mapping(predict_source_probs: Callable[[], torch.Tensor], labels: torch.Tensor,
                            num_target: int, head: MappedHead | None = None) -> torch.Tensor:
    """One ILM update: FLM on the source probabilities `[N, S]` that `predict_source_probs()` returns for
    the labeled set under the current prompt (e.g. `reprogrammed.source_probabilities`); writes the new
    map into `head` when given, and returns it `[T]`. Call it every few epochs; the schedule is yours.
    """
    with torch.no_grad():
        probs = predict_source_probs()
    mapping = frequency_label_mapping(probs, labels, num_target)
    if head is not None:
        head.set_mapping(mapping)
    return mapping
