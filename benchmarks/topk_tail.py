"""How well top-k soft labels reconstruct a many-class teacher distribution: uniform tail vs a prior tail.

Run: .venv/bin/python benchmarks/topk_tail.py [--images 2000] [--temperature 2] [--ks 8,16,24]

The teacher is EfficientNet-Lite2 with its packaged 1,000-class ImageNet head at 64 px, on Fashion-MNIST
training images (the outputs TDMR's proxy space distils). The first half of the images gives the prior (the
mean teacher distribution); on the second half, each view is compressed to its top k and reconstructed two
ways: the rest of the mass spread uniformly over the other classes (what the cache does), or spread in
proportion to the prior. Prints the mass kept in the top k and KL(full || reconstruction) of each.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from taskdistill.cache.soft_labels import compress_topk, expand_topk
from taskdistill.data.sources import load_fashion_mnist
from taskdistill.data.views import model_input
from taskdistill.models.registry import create_model


def kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """Mean over rows of KL(p || q) for `[M, K]` distributions."""
    return float((p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(-1).mean())


def prior_tail(values: np.ndarray, indices: np.ndarray, prior: torch.Tensor) -> torch.Tensor:
    """`[M, K]`: the top-k values in place, the rest of the mass spread in proportion to `prior` `[K]`."""
    v, i = torch.as_tensor(values).float(), torch.as_tensor(indices.astype(np.int64))
    weights = prior.expand(len(v), -1).clone().scatter_(-1, i, 0.0)
    rest = (1 - v.sum(-1, keepdim=True)).clamp_min(0)
    return (weights / weights.sum(-1, keepdim=True) * rest).scatter_(-1, i, v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--ks", default="8,16,24")
    args = ap.parse_args()
    torch.set_num_threads(1)
    images = load_fashion_mnist().train.images[: args.images]
    teacher = create_model("tf_efficientnet_lite2", 1000, pretrained=True, input_size=64).eval()
    with torch.inference_mode():
        logits = torch.cat([teacher(model_input(images[i:i + 200], teacher.preprocess))
                            for i in range(0, len(images), 200)]).float()
    half = len(logits) // 2
    probs = torch.softmax(logits / args.temperature, -1)
    prior, held_out = probs[:half].mean(0), probs[half:]
    print("| k | bytes/view | mass in top k | KL uniform tail | KL prior tail |\n|---|---|---|---|---|")
    for k in (int(x) for x in args.ks.split(",")):
        values, indices = compress_topk(logits[half:], k, args.temperature)
        uniform = expand_topk(values, indices, 1000)
        print(f"| {k} | {k * 4} | {float(values.astype(np.float32).sum(-1).mean()):.3f} | "
              f"{kl(held_out, uniform):.4f} | {kl(held_out, prior_tail(values, indices, prior)):.4f} |")


if __name__ == "__main__":
    main()
