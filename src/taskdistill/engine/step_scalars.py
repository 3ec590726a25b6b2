"""The loss and metrics of the training steps, accumulated on the device and read on the host only every N steps.

Every step adds its outputs (`{"loss", **parts}`, 0-d tensors) to running sums on the device and folds the
finite-loss check into two device tensors (the first step whose loss was not finite, and that loss), so a
step makes no host-device sync. `read()` copies everything to the host in one transfer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

SKIPPED = ("loss_weight",)  # counts for DDP's loss weighting, not metrics


@dataclass
class Reading:
    """What `StepScalars.read` found: the means since the previous read, the last loss, and the first
    non-finite loss (`bad_step` -1: none)."""

    means: dict[str, float]
    steps: int
    last_loss: float
    bad_step: int
    bad_loss: float


@dataclass
class EpochMeans:
    """Host-side running sums of the readings of one epoch."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0

    def add(self, reading: Reading) -> None:
        for k, v in reading.means.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * reading.steps
        self.steps += reading.steps

    def means(self) -> dict[str, float]:
        return {k: v / self.steps for k, v in self.sums.items()} if self.steps else {}


class StepScalars:
    """Device-side sums of step outputs since the last `read()`, plus the finite-loss watch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.float32, device=device)
        self.last: torch.Tensor | None = None

    @torch.no_grad()
    def add(self, out: dict[str, torch.Tensor], step: int) -> None:
        """Fold step `step`'s outputs in (no sync: every operation stays on the device)."""
        loss = out["loss"].detach().float()
        newly_bad = ~torch.isfinite(loss) & (self.bad_step < 0)
        self.bad_step = torch.where(newly_bad, step, self.bad_step)
        self.bad_loss = torch.where(newly_bad, loss, self.bad_loss)
        for k, v in out.items():
            if k in SKIPPED or not isinstance(v, torch.Tensor):
                continue
            v = v.detach().float()
            v = v.mean() if v.ndim else v
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1
        self.last = loss

    def read(self) -> Reading:
        """Means since the previous read (one device-to-host copy), then start new sums."""
        keys = list(self.sums)
        last = self.last if self.last is not None else torch.full((), float("nan"), device=self.device)
        parts = [self.bad_step.double(), self.bad_loss.double(), last.double(), *(self.sums[k].double() for k in keys)]
        values = torch.stack(parts).tolist()
        n = max(self.count, 1)
        reading = Reading(means={k: v / n for k, v in zip(keys, values[3:], strict=True)}, steps=self.count,
                          last_loss=values[2], bad_step=int(values[0]), bad_loss=values[1])
        self.sums, self.count = {}, 0
        return reading
