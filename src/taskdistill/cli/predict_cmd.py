"""`taskdistill predict CHECKPOINT IMAGE...`: top-k classes for image files."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files with a checkpoint")
    p.add_argument("checkpoint", help="checkpoint path (.safetensors or its stem)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    p.set_defaults(func=predict)


def predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from taskdistill.data.sources import decode_image
    from taskdistill.engine.checkpoint import load_checkpoint
    from taskdistill.engine.device import set_threads
    from taskdistill.engine.evaluate import predict_logits
    from taskdistill.errors import DataError

    set_threads(None)
    model, meta = load_checkpoint(args.checkpoint)
    names = meta["class_names"]
    size = meta["preprocess"]["input_size"]
    images = []
    for f in args.images:
        path = Path(f)
        if not path.is_file():
            raise DataError(f"image file '{path}' does not exist")
        try:
            images.append(decode_image(path, size))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image '{path}': {e}") from None
    probs = predict_logits(model, torch.stack(images), progress=False).softmax(1)
    k = min(args.top_k, len(names))
    for f, p in zip(args.images, probs, strict=True):
        top = p.topk(k)
        pairs = [(names[i], float(v)) for v, i in zip(top.values, top.indices, strict=True)]
        if args.json:
            print(json.dumps({"image": f, "top": [{"class": c, "prob": round(v, 5)} for c, v in pairs]}))
        else:
            print(f"{f}: " + ", ".join(f"{c} {100 * v:.1f}%" for c, v in pairs))
    return 0
