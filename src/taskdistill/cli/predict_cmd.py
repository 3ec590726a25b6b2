"""`taskdistill predict CHECKPOINT IMAGES...`: top-k classes for image files, folders (recursively) and glob
patterns, streamed in batches as a table, CSV or JSON lines; or, for a segmentation checkpoint, colour-coded
mask PNGs (`--out DIR`). Images are decoded by the checkpoint's recorded policy, exactly as in training."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with a checkpoint (segmentation: write mask PNGs)")
    p.add_argument("checkpoint", help="checkpoint path (.safetensors or its stem)")
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table (default), csv (path,label,probability,label_2,probability_2,...) or json lines")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("--batch-size", type=int, default=64, help="images decoded and predicted at a time")
    p.add_argument("--out", default="predictions",
                   help="segmentation checkpoints: folder for <stem>_mask.png (colour-coded class indices)")
    p.add_argument("--overlay", action="store_true", help="segmentation: also write <stem>_overlay.png")
    p.set_defaults(func=predict)


def predict(args: argparse.Namespace) -> int:
    from taskdistill.engine.checkpoint import load_checkpoint
    from taskdistill.engine.device import set_threads
    from taskdistill.kinds import kind_of_checkpoint
    from taskdistill.kinds.predictions import PredictOptions

    set_threads(None)
    model, meta = load_checkpoint(args.checkpoint)
    opts = PredictOptions(format="json" if args.json else args.format, top_k=args.top_k, batch_size=args.batch_size,
                          out=args.out, overlay=args.overlay)
    return kind_of_checkpoint(meta).predict(model, meta, args.images, opts)
