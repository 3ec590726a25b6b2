"""ONNX export with a dynamic batch axis (and dynamic image size for the uint8 input pipeline), and a runner."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from taskdistill.errors import TaskDistillError

OPSET = 18  # >= 17, and 18 for Resize with antialias (the uint8 input pipeline)


def _onnxruntime():  # noqa: ANN202 - the module
    try:
        import onnxruntime
    except ImportError:
        raise TaskDistillError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'taskdistill[export]'") from None
    return onnxruntime


def export_onnx(model: nn.Module, path: Path, example: torch.Tensor, uint8_input: bool) -> Path:
    """Write `model` (in eval mode) to `path`: input `pixel_values` float `[B, 3, S, S]`, or `images` uint8
    `[B, H, W, C]` with `uint8_input`; output `logits`. Batch (and image size for uint8) are dynamic."""
    _onnxruntime()
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    if uint8_input:
        h, w = torch.export.Dim("height", min=2, max=8192), torch.export.Dim("width", min=2, max=8192)
        names, shapes = ["images"], ({0: batch, 1: h, 2: w},)
    else:
        names, shapes = ["pixel_values"], ({0: batch},)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET, input_names=names,
                                    output_names=["logits"], dynamic_shapes=shapes, verbose=False)
        program.save(str(path))
    return path


class OnnxModel:
    """An onnxruntime session on the CPU: `run(x)` -> the first output as a numpy array."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        ort = _onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]
