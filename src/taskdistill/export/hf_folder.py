"""A timm / Hugging Face model folder: `config.json` + `model.safetensors` + a `README.md` model card.

`timm.create_model("local-dir:FOLDER", pretrained=True)` loads it with timm alone (no taskdistill), and
`timm.data.resolve_data_config({}, model=model)` gives its input size, mean, std, interpolation and crop_pct.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from torch import nn

from taskdistill.data.decode import DecodePolicy
from taskdistill.errors import TaskDistillError


def hf_config(model: nn.Module, meta: dict[str, Any], policy: DecodePolicy | None) -> dict[str, Any]:
    """timm's config.json for `model` (a plain timm architecture) with the checkpoint's labels and input pipeline."""
    from timm.models import get_pretrained_cfg

    spec = meta["model"]
    size = int(meta["preprocess"]["input_size"])
    cfg = get_pretrained_cfg(spec["name"])
    pretrained = {k: v for k, v in (cfg.to_dict() if cfg is not None else {}).items()
                  if k in ("first_conv", "classifier", "fixed_input_size")}
    pretrained.update({
        "input_size": [3, size, size], "mean": list(meta["preprocess"]["mean"]), "std": list(meta["preprocess"]["std"]),
        "interpolation": policy.interpolation if policy else "bicubic",
        "crop_pct": policy.crop_pct if policy and policy.resize == "crop" else 1.0,
        "crop_mode": "center", "num_classes": int(spec["num_classes"]),
    })
    return {"architecture": spec["name"], "num_classes": int(spec["num_classes"]),
            "num_features": int(getattr(model, "num_features", 0)), "model_args": dict(spec.get("kwargs") or {}),
            "pretrained_cfg": pretrained, "label_names": list(meta["class_names"])}


def export_hf(model: nn.Module, meta: dict[str, Any], policy: DecodePolicy | None, out: Path, card: str) -> Path:
    """Write the folder; only plain timm architectures (not `open_clip:`, `hf:` or `seg:` models)."""
    name = meta["model"]["name"]
    if ":" in name or not timm.is_model(name):
        raise TaskDistillError(f"the hf format is for timm architectures; '{name}' is not one. "
                               f"Export it with --format onnx or torchscript.")
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(model, meta, policy), indent=2) + "\n")
    (out / "README.md").write_text(card)
    return out


def load_with_timm(folder: Path) -> nn.Module:
    """The exported folder as timm builds it (what a user without taskdistill does)."""
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    return model.eval().to(memory_format=torch.contiguous_format)
