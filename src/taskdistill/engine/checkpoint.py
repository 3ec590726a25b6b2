"""Self-describing checkpoints: `<stem>.safetensors` (weights) + `<stem>.json` (what the weights are)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from taskdistill import distributed
from taskdistill.atomic import atomic_path, write_json
from taskdistill.data.decode import DecodePolicy
from taskdistill.errors import CheckpointError
from taskdistill.models.base import Preprocess
from taskdistill.models.registry import ModelSpec, rebuild_model
from taskdistill.models.weights_file import checkpoint_stem, load_weights_into
from taskdistill.version import __version__

FORMAT = "taskdistill-checkpoint/1"




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
    stem = checkpoint_stem(path)
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
    stem = checkpoint_stem(path)
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


def load_checkpoint(path: str | Path, expect_classes: list[str] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights (no pickle: safetensors only).

    `expect_classes`: the data's class names; a checkpoint trained on other classes is an error.
    """
    meta = read_meta(path)
    if expect_classes is not None and list(meta["class_names"]) != list(expect_classes):
        raise CheckpointError(
            f"checkpoint '{checkpoint_stem(path)}' was trained on classes {meta['class_names']}, but the data has "
            f"{list(expect_classes)}. Use a checkpoint trained on this dataset, or point the data at the same classes."
        )
    spec = ModelSpec.from_dict(meta["model"])
    model = rebuild_model(spec)
    model.preprocess = Preprocess.from_dict(meta["preprocess"])
    load_weights_into(model, checkpoint_stem(path).with_suffix(".safetensors"))
    model.eval()
    return model, meta
