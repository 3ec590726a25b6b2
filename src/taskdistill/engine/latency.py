"""How fast a model answers on this machine: batch-1 latency (p50, p95) and batch-N throughput."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Latency:
    """Milliseconds per batch-1 call (median and 95th percentile) and images per second at `batch_size`."""

    p50_ms: float
    p95_ms: float
    throughput: float
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_latency(run: Callable[[Any], Any], one: Any, many: Any, batch_size: int, seconds: float = 2.0,
                    warmup: int = 5, min_calls: int = 20) -> Latency:
    """Time `run(one)` (a batch of 1) for about `seconds` after `warmup` calls, then `run(many)` (a batch of
    `batch_size`) for about `seconds`; `run` must block until its result is ready."""
    for _ in range(warmup):
        run(one)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        run(one)
        times.append(time.perf_counter() - t)
    run(many)
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        run(many)
        calls += 1
    throughput = calls * batch_size / (time.perf_counter() - start)
    ms = np.array(times) * 1000
    return Latency(p50_ms=round(float(np.percentile(ms, 50)), 3), p95_ms=round(float(np.percentile(ms, 95)), 3),
                   throughput=round(throughput, 1), batch_size=batch_size)


def model_latency(model: Any, seconds: float = 1.0, batch_size: int = 64, precision: str = "fp32") -> Latency:
    """Batch-1 latency and batch-`batch_size` throughput of a PyTorch model (eval mode, on its own device)
    on zero inputs `[B, 3, S, S]` at its input size (channels-last, as `model_input` makes them), run at
    `precision` (`engine.precision`; fp32: no autocast)."""
    import torch

    from taskdistill.engine.precision import autocast

    size = model.preprocess.input_size
    device = next(model.parameters()).device
    one = torch.zeros(1, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    many = torch.zeros(batch_size, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(precision, device):
            out = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    try:
        return measure_latency(run, one, many, batch_size, seconds=seconds)
    finally:
        model.train(was_training)
