"""TorchScript export (traced), for PyTorch-only serving stacks (LibTorch, TorchServe)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


def export_torchscript(model: nn.Module, path: Path, example: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), (example,), check_trace=False)
        traced.save(str(path))
    return path


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    return torch.jit.load(str(path), map_location="cpu").eval()
