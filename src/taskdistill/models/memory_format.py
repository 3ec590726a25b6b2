"""Channels-last memory format for CPU training, minus the convolutions where it corrupts memory.

channels_last makes convolutions measurably faster on CPU (BENCHMARKS.md, "CPU settings"). But oneDNN's
weight-gradient kernels for a *strided 1x1* convolution with an NHWC input write past their scratch space
when the input has fewer channels than the kernel's channel block (upstream: uxlfoundation/oneDNN#6035):
the process aborts ("double free or corruption", "free(): invalid next size") or hangs in `backward()`.
The block is 8 channels for the AVX2 kernel and 16 for the AVX-512 one. On this project's AVX2 machine
(torch 2.14.1) a grid over in-channels 1-16, kernels 1-3 and strides 2-4
(`benchmarks/conv_channels_last_crash.py`, 32 px inputs) crashed exactly for 1x1 kernels with 2-7
in-channels at strides 2 and 4 (stride 3 crashed too on a 33 px input), never in the contiguous format.
FastViT's stem has one (`stem.0.conv_scale.conv`: 3 -> 48 channels, 1x1, stride 2), so training
`fastvit_t8` aborted. Every strided 1x1 convolution with fewer than 16 in-channels per group
(the larger block, so AVX-512 machines are covered too) keeps the contiguous format, weight and input;
every other layer stays channels_last.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_SAFE_IN_CHANNELS_PER_GROUP = 16  # the widest channel block of oneDNN's 1x1 kernels (AVX-512)


def unsafe_in_channels_last(conv: nn.Module) -> bool:
    """True for the convolutions whose channels_last backward corrupts memory (see the module docstring)."""
    if not isinstance(conv, nn.Conv2d):
        return False
    per_group = conv.in_channels // conv.groups
    strided = any(s > 1 for s in conv.stride)
    return tuple(conv.kernel_size) == (1, 1) and strided and per_group < MIN_SAFE_IN_CHANNELS_PER_GROUP


def _contiguous_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
    """Forward pre-hook: the first input `[B, C, H, W]` in the contiguous format, on the CPU only (the oneDNN
    bug is a CPU one; CUDA keeps channels_last)."""
    if args[0].device.type != "cpu":
        return None
    return (args[0].contiguous(), *args[1:])


def to_channels_last(model: nn.Module) -> list[str]:
    """Convert `model` to channels_last in place, keeping the unsafe convolutions contiguous.

    Returns the names of the convolutions kept contiguous.
    """
    model.to(memory_format=torch.channels_last)
    kept = []
    for name, module in model.named_modules():
        if unsafe_in_channels_last(module):
            module.weight.data = module.weight.data.clone(memory_format=torch.contiguous_format)
            module.register_forward_pre_hook(_contiguous_input)
            kept.append(name)
    return kept
