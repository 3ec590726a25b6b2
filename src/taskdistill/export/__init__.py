"""Ship a trained student: ONNX (optionally with the uint8 input pipeline in the graph and int8 weights), a
timm / Hugging Face folder, or TorchScript; every export checks itself against PyTorch on real images."""
