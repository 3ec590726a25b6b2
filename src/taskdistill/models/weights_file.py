"""Reading weight files into a model: `.safetensors` (a taskdistill checkpoint's or anyone's) and `.pt` state
dicts, strictly checked against the model (names and shapes). Checkpoint metadata lives in
engine/checkpoint.py, which builds on this."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from taskdistill.errors import CheckpointError


def checkpoint_stem(path: str | Path) -> Path:
    """A checkpoint's path without `.safetensors` / `.json`."""
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a `.safetensors` file; a truncated or corrupt file is a CheckpointError naming it."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        size = path.stat().st_size
        raise CheckpointError(f"weights file '{path}' ({size:,} bytes) is truncated or corrupt and cannot be read "
                              f"({type(e).__name__}: {e}); copy it again, or rerun the stage that wrote it") from None


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' does not exist")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the user's file
        raise CheckpointError(f"cannot read weights file '{path}': {e}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}' does not hold a state dict")
    return state


def fit_problem(model: nn.Module, state: dict[str, Any]) -> str | None:
    """One line on how `state` differs from `model`'s own state dict (names, then shapes), or None if it fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    parts = []

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

    if wrong:
        k = wrong[0]
        more = f" (+{len(wrong) - 1} more tensors of another shape)" if len(wrong) > 1 else ""
        parts.append(f"{k} is {list(state[k].shape)} in the file, {list(own[k].shape)} in the model{more}")
    if missing:
        parts.append(f"missing {listed(missing)}")
    if unexpected:
        parts.append(f"unexpected {listed(unexpected)}")
    return "; ".join(parts) or None


def load_weights_into(model: nn.Module, path: str | Path) -> None:
    """Load a `.safetensors` / `.pt` state dict (or a taskdistill checkpoint stem) into `model`, strictly:
    every tensor name and shape must match the model's (CheckpointError naming the file and the first misfit)."""
    p = Path(path)
    weights = checkpoint_stem(p).with_suffix(".safetensors") if p.suffix in ("", ".json") else p
    state = _read_state(weights)
    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    problem = fit_problem(model, state)
    if problem is not None:
        raise CheckpointError(f"weights in '{weights}' do not fit model '{name}': {problem}. Load them into the model "
                              f"they were saved from (same architecture and class count)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights in '{weights}' do not fit model '{name}': {str(e)[:500]}") from None


