"""What every batch source yields: named tensors (`images` uint8 `[B, C, H, W]`, `labels` `[B]`, `indices`, ...)."""

from __future__ import annotations

import torch

Batch = dict[str, torch.Tensor]
