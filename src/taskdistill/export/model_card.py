"""README.md model card of an exported student: data, labels, method, metrics, input pipeline, latency."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from taskdistill.engine.latency import model_latency

METHODS = {
    "teacher": "the pretrained teacher finetuned on the labeled images",
    "student_distilled": "the student after distilling the finetuned teacher's predictions over unlabeled images",
    "student": "task-oriented knowledge transfer: teacher finetuned on the labels, its predictions distilled "
               "into the student over unlabeled images, the student finetuned on the labels",
    "scratch": "the student trained from scratch on the labeled images only",
}


def _run_metrics(checkpoint: Path, stage: str) -> dict[str, Any] | None:
    """The stage's test metrics from the run folder the checkpoint sits in (`<run>/checkpoints/<stage>`)."""
    metrics = checkpoint.resolve().parent.parent / "metrics.json"
    if not metrics.is_file():
        return None
    try:
        return json.loads(metrics.read_text())["stages"][stage]["test"]
    except (KeyError, ValueError):
        return None


def model_card(meta: dict[str, Any], checkpoint: Path, model: nn.Module | None = None) -> str:
    cfg = meta.get("config") or {}
    data = cfg.get("data", {})
    stage = str(meta.get("stage", "?"))
    names = meta["class_names"]
    pre = meta["preprocess"]
    decode = meta.get("decode") or {}
    lines = [f"# {meta['model']['name']} ({stage}), exported by taskdistill {meta.get('taskdistill_version', '')}", "",
             f"Method: {METHODS.get(stage, stage)}.", "",
             f"Data: `{data.get('dataset', '?')}`" + (f" from `{data['root']}`" if data.get("root") else "") +
             (f", {data['labels_per_class']} labels per class" if data.get("labels_per_class") else "") + ".", "",
             f"Labels ({len(names)}): " + ", ".join(f"`{n}`" for n in names) + ".", "",
             "Input: " + (f"decode to {decode['size']} px ({decode['resize']}, crop_pct {decode['crop_pct']}, "
                          f"{decode['interpolation']}, {decode['color']}), then " if decode else "") +
             f"resize to {pre['input_size']} px (bilinear, antialiased), scale to [0, 1], normalise with mean "
             f"{tuple(round(v, 4) for v in pre['mean'])} and std {tuple(round(v, 4) for v in pre['std'])}.", ""]
    metrics = _run_metrics(checkpoint, stage)
    if metrics:
        lines += [f"Test top-1 {100 * metrics['top1']:.2f} %, macro accuracy {100 * metrics['macro_accuracy']:.2f} % "
                  f"on {metrics['num_images']:,} images (the run's metrics.json).", ""]
    if model is not None:
        lat = model_latency(model, seconds=2.0)
        params = sum(p.numel() for p in model.parameters())
        lines += [f"Size and speed (PyTorch, this export's CPU): {params / 1e6:.2f} M parameters; batch 1: p50 "
                  f"{lat.p50_ms:.2f} ms, p95 {lat.p95_ms:.2f} ms; batch {lat.batch_size}: {lat.throughput:,.0f} "
                  f"images/s.", ""]
    lines += ["Load with timm alone:", "", "```python", "import timm", "model = timm.create_model('local-dir:PATH', "
              "pretrained=True).eval()", "cfg = timm.data.resolve_data_config({}, model=model)", "```", ""]
    return "\n".join(lines)
