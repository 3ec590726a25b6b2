"""Mid-stage checkpoints: everything `fit` needs to continue a stage from a step inside it.

One file per stage (`LoopOptions.checkpoint_path`), written atomically (temp file + rename) by rank 0:
the trained modules' state (parameters and buffers), the optimizer, the GradScaler, the position (epoch,
step within the epoch, global step, images seen), every RNG state that matters (torch CPU and CUDA, numpy's
and Python's global generators; under DDP each rank's, gathered) and the task's own state
(`task.state_dict()` where a task has one: augmentation generators, step counters). It is read back with
`torch.load(weights_only=True)`; the small JSON part travels as a string inside it.

A checkpoint records what it belongs to (`fingerprint`: stage, schedule, seed, world size, steps, set size,
trained parameter shapes, precision). One that does not match the stage being run is refused with a
`CheckpointError` naming the difference; it is never silently used. The file is deleted when the stage ends.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from taskdistill import distributed
from taskdistill.atomic import atomic_path
from taskdistill.errors import CheckpointError

FORMAT = "taskdistill-train-state/1"


@dataclass(frozen=True)
class Position:
    """Where a stage stands after `step` optimizer steps: the next step is step `step_in_epoch` of `epoch`."""

    step: int
    epoch: int
    step_in_epoch: int
    images_seen: int


def rng_state() -> dict[str, Any]:
    """This process's global RNG states: torch CPU (uint8 tensor), CUDA (one per device), numpy, Python."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _json_ready(obj: Any) -> Any:
    """RNG and task states as JSON (tuples as lists; numpy ints as ints)."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


def _split_tensors(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Replace every tensor in `obj` by `{"__tensor__": key}` and collect it in `tensors`."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {k: _split_tensors(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    return _json_ready(obj)


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def _optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """Integer keys of `optimizer.state_dict()["state"]` survive the JSON trip as strings: turn them back."""
    state["state"] = {int(k): v for k, v in state["state"].items()}
    return state


class TrainState:
    """Save and restore one stage's mid-stage checkpoint at `path` (see the module docstring)."""

    def __init__(self, path: Path, fingerprint: dict[str, Any], modules: list[nn.Module],
                 optimizer: torch.optim.Optimizer, task: object, scaler: torch.amp.GradScaler | None = None) -> None:
        self.path, self.fingerprint = Path(path), _json_ready(fingerprint)
        self.modules, self.optimizer, self.task, self.scaler = modules, optimizer, task, scaler

    def save(self, position: Position) -> None:
        """Write the state after `position.step` steps (every rank calls it under DDP; rank 0 writes)."""
        rngs = distributed.gather_objects(rng_state())
        if not distributed.is_main():
            return
        task_state = self.task.state_dict() if hasattr(self.task, "state_dict") else None
        tensors: dict[str, torch.Tensor] = {}
        record = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "position": position.__dict__,
            "modules": [_split_tensors(m.state_dict(), tensors, f"module{i}") for i, m in enumerate(self.modules)],
            "optimizer": _split_tensors(self.optimizer.state_dict(), tensors, "optimizer"),
            "scaler": _split_tensors(self.scaler.state_dict(), tensors, "scaler") if self.scaler else None,
            "rng": [_split_tensors(r, tensors, f"rng{i}") for i, r in enumerate(rngs)],
            "task": _split_tensors(task_state, tensors, "task") if task_state is not None else None,
        }
        with atomic_path(self.path) as tmp:
            torch.save({"record": json.dumps(record), "tensors": tensors}, tmp)

    def _read(self) -> dict[str, Any]:
        try:
            raw = torch.load(self.path, map_location="cpu", weights_only=True)
            record = json.loads(raw["record"])
            tensors = raw["tensors"]
        except Exception as e:  # noqa: BLE001 - any failure to read is the file's
            raise CheckpointError(f"mid-stage checkpoint '{self.path}' cannot be read ({e}); delete it to start the "
                                  f"stage over") from None
        if record.get("format") != FORMAT:
            raise CheckpointError(f"'{self.path}' is not a {FORMAT} file; delete it to start the stage over")
        return _join_tensors(record, tensors)

    def _mismatch(self, theirs: dict[str, Any]) -> str | None:
        for key in sorted(set(theirs) | set(self.fingerprint)):
            if theirs.get(key) != self.fingerprint.get(key):
                return f"{key}: checkpoint {theirs.get(key)!r}, this run {self.fingerprint.get(key)!r}"
        return None

    def load(self) -> Position:
        """Restore everything saved at `path` and return where the stage stands; CheckpointError if the file
        belongs to another stage, schedule, seed or world size."""
        record = self._read()
        differs = self._mismatch(record["fingerprint"])
        if differs is not None:
            raise CheckpointError(
                f"mid-stage checkpoint '{self.path}' was written by another run of this stage ({differs}); it is "
                f"not used. Delete it to start the stage over, or run with the settings it was written with")
        rngs = record["rng"]
        if len(rngs) != distributed.world_size():
            raise CheckpointError(f"mid-stage checkpoint '{self.path}' holds {len(rngs)} rank(s), this run has "
                                  f"{distributed.world_size()}; resume with the same number of processes")
        for module, state in zip(self.modules, record["modules"], strict=True):
            module.load_state_dict(state, strict=True)
        self.optimizer.load_state_dict(_optimizer_state(record["optimizer"]))
        if self.scaler is not None and record["scaler"] is not None:
            self.scaler.load_state_dict(record["scaler"])
        if record["task"] is not None and hasattr(self.task, "load_state_dict"):
            self.task.load_state_dict(record["task"])
        set_rng_state(rngs[distributed.rank()])
        return Position(**record["position"])

    def exists(self) -> bool:
        return self.path.is_file()

    def remove(self) -> None:
        """Delete the checkpoint (the stage finished); rank 0 only."""
        if distributed.is_main():
            self.path.unlink(missing_ok=True)
