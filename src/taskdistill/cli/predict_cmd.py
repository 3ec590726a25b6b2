"""`taskdistill predict CHECKPOINT IMAGE...`: top-k classes for image files, or, for a segmentation
checkpoint, colour-coded mask PNGs (`--out DIR`)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files with a checkpoint (segmentation: write mask PNGs)")
    p.add_argument("checkpoint", help="checkpoint path (.safetensors or its stem)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    p.add_argument("--out", default="predictions",
                   help="segmentation checkpoints: folder for <stem>_mask.png (colour-coded class indices)")
    p.add_argument("--overlay", action="store_true", help="segmentation: also write <stem>_overlay.png")
    p.set_defaults(func=predict)


def predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from taskdistill.data.decode import DECODE_ERRORS, DecodePolicy
    from taskdistill.data.sources import decode_image
    from taskdistill.engine.checkpoint import decode_policy_of, load_checkpoint
    from taskdistill.engine.device import set_threads
    from taskdistill.engine.evaluate import predict_logits
    from taskdistill.errors import DataError

    set_threads(None)
    model, meta = load_checkpoint(args.checkpoint)
    names = meta["class_names"]
    if meta.get("task") == "segmentation":
        return _predict_masks(args, model, meta)
    # the checkpoint's own decode policy: a new image goes through the same pixels path as the training images
    policy = decode_policy_of(meta) or DecodePolicy(int(meta["preprocess"]["input_size"]))
    images = []
    for f in args.images:
        path = Path(f)
        if not path.is_file():
            raise DataError(f"image file '{path}' does not exist")
        try:
            images.append(decode_image(path, policy))
        except DECODE_ERRORS as e:
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


def _predict_masks(args: argparse.Namespace, model: nn.Module, meta: dict[str, Any]) -> int:
    from taskdistill.data.segmentation import palette
    from taskdistill.engine.seg_predict import predict_mask_files

    names = meta["class_names"]
    results = predict_mask_files(model, args.images, names, args.out, args.overlay, meta.get("ignore_index", 255))
    for r in results:
        if args.json:
            print(json.dumps(r))
        else:
            shares = ", ".join(f"{c} {100 * v:.1f}%" for c, v in list(r["class_shares"].items())[:args.top_k])
            print(f"{r['image']} -> {r['mask']}: {shares}")
    if not args.json:
        colours = palette(len(names))
        print("colours: " + ", ".join(f"{n} #{r:02x}{g:02x}{b:02x}" for n, (r, g, b) in zip(names, colours, strict=True)))
    return 0
