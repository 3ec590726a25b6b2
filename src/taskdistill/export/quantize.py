"""int8 ONNX: onnxruntime static quantization (QDQ, per-channel int8 weights) calibrated on transfer images."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from taskdistill.data.image_rows import Images
from taskdistill.export.parity import exported_input


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over uint8 images `[N, C, H, W]`, in batches."""

    def __init__(self, model: nn.Module, images: Images, input_name: str, uint8_input: bool, batch_size: int) -> None:
        self.model, self.images, self.name, self.uint8 = model, images, input_name, uint8_input
        self.starts = iter(range(0, len(images), batch_size))
        self.batch_size = batch_size

    def get_next(self) -> dict[str, np.ndarray] | None:
        start = next(self.starts, None)
        if start is None:
            return None
        batch = self.images[torch.arange(start, min(start + self.batch_size, len(self.images)))]
        with torch.inference_mode():
            return {self.name: exported_input(batch, self.model, self.uint8)}


def quantize_int8(fp32: Path, out: Path, model: nn.Module, calibration: Images, uint8_input: bool,
                  batch_size: int = 32) -> Path:
    """Write an int8 copy of the ONNX file `fp32` to `out`, calibrated on `calibration` images (MinMax)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from taskdistill.export.onnx_file import OnnxModel

    name = OnnxModel(fp32).input_name
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), _Calibration(model, calibration, name, uint8_input, batch_size),
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax)
    return out
