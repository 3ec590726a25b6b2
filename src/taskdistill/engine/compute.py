"""Compute accounting: parameters and forward FLOPs of a model at its input size."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def forward_gflops(model: nn.Module) -> float:
    """GFLOPs (multiply-add = 2 FLOPs) of one forward pass on one `[1, 3, S, S]` image, S = input size."""
    size = model.preprocess.input_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, 3, size, size, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
