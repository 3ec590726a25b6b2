"""Self-describing checkpoints: `<stem>.safetensors` (weights) + `<stem>.json` (what the weights are)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from taskdistill.data.decode import DecodePolicy
from taskdistill.engine import distributed
from taskdistill.engine.atomic import atomic_path, write_json
from taskdistill.errors import CheckpointError
from taskdistill.models.base import Preprocess
from taskdistill.models.registry import ModelSpec, rebuild_model
from taskdistill.version import __version__

FORMAT = "taskdistill-checkpoint/1"


def _stem(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def save_checkpoint(path: str | Path, model: nn.Module, class_names: list[str], stage: str,
                    config: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    decode: DecodePolicy | None = None) -> Path:
    """Write weights and metadata (model spec, classes, preprocessing, stage, config, version) atomically.

    `decode` is how the training images were decoded from files (`meta["decode"]`): with the model's
    `preprocess` it is the whole input pipeline, which `evaluate` and `predict` replay for new images.

    Returns the `.safetensors` path. The JSON is written last, so a checkpoint with a JSON is complete.
    Under a process group only rank 0 writes (every rank holds the same model) and every rank returns once
    the files exist.
    """
    stem = _stem(path)
    weights = stem.with_suffix(".safetensors")
    extra = {**(extra or {}), **({"decode": decode.to_dict()} if decode is not None else {})}
    distributed.on_main(lambda: _write_checkpoint(stem, model, class_names, stage, config, extra))
    distributed.check_visible(stem.with_suffix(".json"), "checkpoint")
    return weights


def _write_checkpoint(stem: Path, model: nn.Module, class_names: list[str], stage: str,
                      config: dict[str, Any] | None, extra: dict[str, Any] | None) -> None:
    spec: ModelSpec = model.spec
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "taskdistill_version": __version__,
        "stage": stage,
        "model": spec.to_dict(),
        "class_names": list(class_names),
        "preprocess": model.preprocess.to_dict(),
        "config": config or {},
        **(extra or {}),
    }
    with atomic_path(stem.with_suffix(".safetensors")) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "model": spec.name})
    write_json(stem.with_suffix(".json"), meta)


def decode_policy_of(meta: dict[str, Any], load_size: int | None = None) -> DecodePolicy:
    """The decode policy a checkpoint's training images were made with. Older checkpoints did not record it:
    they stretched files to `load_size` (the run's data.load_size, or the largest model input size; default
    the model's own input size)."""
    if meta.get("decode"):
        return DecodePolicy.from_dict(meta["decode"])
    return DecodePolicy.legacy(load_size or int(meta["preprocess"]["input_size"]))


META_KEYS = ("model", "class_names", "preprocess")  # what `load_checkpoint` needs from the metadata


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata (`<stem>.json`), checked: CheckpointError naming the file if it is missing,
    unreadable, of another format, or lacks what a checkpoint records."""
    stem = _stem(path)
    meta_path = stem.with_suffix(".json")
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint '{stem}' has no metadata file '{meta_path}'; is it a taskdistill checkpoint?")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"checkpoint metadata '{meta_path}' is unreadable or truncated ({e}); copy the "
                              f"checkpoint again, or rerun the stage that wrote it") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"'{meta_path}' is not a {FORMAT} file (format={got!r})")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint metadata '{meta_path}' lacks {', '.join(missing)}; copy the checkpoint "
                              f"again, or rerun the stage that wrote it")
    return meta


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
    weights = _stem(p).with_suffix(".safetensors") if p.suffix in ("", ".json") else p
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


def load_checkpoint(path: str | Path, expect_classes: list[str] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights (no pickle: safetensors only).

    `expect_classes`: the data's class names; a checkpoint trained on other classes is an error.
    """
    meta = read_meta(path)
    if expect_classes is not None and list(meta["class_names"]) != list(expect_classes):
        raise CheckpointError(
            f"checkpoint '{_stem(path)}' was trained on classes {meta['class_names']}, but the data has "
            f"{list(expect_classes)}. Use a checkpoint trained on this dataset, or point the data at the same classes."
        )
    spec = ModelSpec.from_dict(meta["model"])
    model = rebuild_model(spec)
    model.preprocess = Preprocess.from_dict(meta["preprocess"])
    load_weights_into(model, _stem(path).with_suffix(".safetensors"))
    model.eval()
    return model, meta
