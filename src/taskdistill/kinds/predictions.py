"""Predictions for image files: the writers of each task kind (classification: top-k rows as a table, CSV
or JSON lines; segmentation: mask PNGs). Images are decoded by the checkpoint's recorded policy."""

from __future__ import annotations

import csv
import glob
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class PredictOptions:
    """How `taskdistill predict` writes: `format` of the rows, `top_k` classes, images per `batch_size`;
    segmentation: the `out` folder for masks and whether to write overlays."""

    format: Literal["table", "csv", "json"] = "table"
    top_k: int = 3
    batch_size: int = 64
    out: str = "predictions"
    overlay: bool = False


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given, folders as their image files (sorted, recursive), glob patterns as their matches."""
    from taskdistill.data.sources import image_files
    from taskdistill.errors import DataError

    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files = image_files(path)
            if not files:
                raise DataError(f"folder '{path}' holds no image files")
            out.extend(Path(f) for f in files)
        elif path.exists():
            out.append(path)
        elif GLOB_CHARS & set(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(f"no file matches '{item}'")
            out.extend(Path(m) for m in matches)
        else:
            raise DataError(f"image file '{path}' does not exist")
    return out


def _batches(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start:start + size]


def predict_classes(model: nn.Module, meta: dict[str, Any], images: list[str], opts: PredictOptions) -> int:
    """Top-k classes of every image, streamed to stdout as `opts.format` rows; unreadable files listed on stderr."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from taskdistill.data.decode import DECODE_ERRORS
    from taskdistill.data.sources import decode_image
    from taskdistill.data.store_decode import usable_cores
    from taskdistill.engine.checkpoint import decode_policy_of
    from taskdistill.engine.evaluate import predict_logits
    from taskdistill.errors import DataError
    from taskdistill.progress import ProgressLine

    names = meta["class_names"]
    paths = expand_inputs(images)
    # the checkpoint's own decode policy: a new image goes through the same pixel path as the training images
    policy = decode_policy_of(meta)
    k = min(opts.top_k, len(names))
    writer = _Writer(opts.format, k)
    bad: list[tuple[Path, str]] = []
    line = ProgressLine(len(paths), "predict", enabled=len(paths) >= 1000)

    def load(path: Path) -> torch.Tensor | str:
        try:
            return decode_image(path, policy)
        except DECODE_ERRORS as e:
            return f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:  # PIL decodes without the GIL
        for chunk in _batches(paths, max(1, opts.batch_size)):
            decoded = list(pool.map(load, chunk))
            good = [(p, x) for p, x in zip(chunk, decoded, strict=True) if isinstance(x, torch.Tensor)]
            bad += [(p, x) for p, x in zip(chunk, decoded, strict=True) if isinstance(x, str)]
            if good:
                probs = predict_logits(model, torch.stack([x for _, x in good]), progress=False).softmax(1)
                for (p, _), row in zip(good, probs, strict=True):
                    top = row.topk(k)
                    writer.write(str(p), [(names[i], float(v)) for v, i in zip(top.values, top.indices, strict=True)])
            line.update(len(chunk))
    if len(paths) >= 1000:
        line.close()
    if bad:
        print(f"skipped {len(bad)} unreadable image(s):", file=sys.stderr)
        for p, why in bad[:50]:
            print(f"  {p}: {why}", file=sys.stderr)
    if len(bad) == len(paths):
        raise DataError(f"none of the {len(paths)} image(s) could be read")
    return 0


class _Writer:
    """Prediction rows to stdout as a table, CSV or JSON lines."""

    def __init__(self, fmt: str, k: int) -> None:
        self.fmt, self.k = fmt, k
        if fmt == "csv":
            self.csv = csv.writer(sys.stdout)
            head = ["path", "label", "probability"]
            for i in range(2, k + 1):
                head += [f"label_{i}", f"probability_{i}"]
            self.csv.writerow(head)

    def write(self, path: str, pairs: list[tuple[str, float]]) -> None:
        if self.fmt == "json":
            print(json.dumps({"image": path, "label": pairs[0][0], "probability": round(pairs[0][1], 5),
                              "top": [{"class": c, "prob": round(v, 5)} for c, v in pairs]}))
        elif self.fmt == "csv":
            self.csv.writerow([path] + [x for c, v in pairs for x in (c, f"{v:.5f}")])
        else:
            print(f"{path}: " + ", ".join(f"{c} {100 * v:.1f}%" for c, v in pairs))
        sys.stdout.flush()


def predict_masks(model: nn.Module, meta: dict[str, Any], images: list[str], opts: PredictOptions) -> int:
    """Colour-coded mask PNGs (and overlays) of every image in `opts.out`; one line (or JSON row) per image."""
    from taskdistill.data.segmentation import palette
    from taskdistill.engine.seg_predict import predict_mask_files

    names = meta["class_names"]
    results = predict_mask_files(model, expand_inputs(images), names, opts.out, opts.overlay, meta.get("ignore_index", 255))
    for r in results:
        if opts.format == "json":
            print(json.dumps(r))
        else:
            shares = ", ".join(f"{c} {100 * v:.1f}%" for c, v in list(r["class_shares"].items())[:opts.top_k])
            print(f"{r['image']} -> {r['mask']}: {shares}")
    if opts.format != "json":
        colours = palette(len(names))
        print("colours: " + ", ".join(f"{n} #{r:02x}{g:02x}{b:02x}" for n, (r, g, b) in zip(names, colours, strict=True)))
    return 0
