"""Typed results shared by the stages, the methods, the run and sweep reports and `evaluate --json`.

Plain dataclasses with no dependency on the rest of the package (the bottom layer). Each one writes
itself to JSON (`to_json`) and reads itself back (`from_json`); the JSON layout is versioned by
`METRICS_SCHEMA`, written into every `metrics.json`, sweep cell and `evaluate --json` answer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

METRICS_SCHEMA = "taskdistill.metrics/2"


@dataclass
class Metrics:
    """A model's scores on one labeled set.

    `scores`: fractions in [0, 1] by name (classification: top1, macro_accuracy; segmentation: miou,
    pixel_accuracy, mean_accuracy); `per_class`: class name -> fraction, None where a class is absent;
    `per_class_name`: what the per-class fraction is (accuracy or IoU); `num_images`: the set's size.
    """

    scores: dict[str, float]
    per_class: dict[str, float | None]
    per_class_name: str
    num_images: int
    seconds: float = 0.0
    confusion_matrix: list[list[int]] | None = None

    def __getitem__(self, key: str) -> float:
        return self.scores[key]

    def to_json(self) -> dict[str, Any]:
        """The flat layout reports and older tools read: `{top1: .., per_class_accuracy: {..}, ...}`."""
        out: dict[str, Any] = dict(self.scores)
        out[f"per_class_{self.per_class_name}"] = dict(self.per_class)
        out["num_images"] = self.num_images
        out["seconds"] = round(self.seconds, 2)
        if self.confusion_matrix is not None:
            out["confusion_matrix"] = self.confusion_matrix
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Metrics:
        per_key = next(k for k in d if k.startswith("per_class_"))
        skip = {per_key, "num_images", "seconds", "confusion_matrix", "schema"}
        scores = {k: float(v) for k, v in d.items() if k not in skip and isinstance(v, int | float)}
        return cls(scores, dict(d[per_key]), per_key[len("per_class_"):], int(d.get("num_images", 0)),
                   float(d.get("seconds", 0.0)), d.get("confusion_matrix"))


def interval95(p: float, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion `p` measured on `n` independent items (test images)."""
    if n <= 0:
        return (0.0, 1.0)
    z = 1.959963984540054
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if p <= 0 else max(0.0, centre - half), 1.0 if p >= 1 else min(1.0, centre + half))


@dataclass
class FitInfo:
    """What one run of the training loop did: steps, epochs, images through the trained model, seconds."""

    steps: int
    epochs: int
    images: int
    seconds: float
    final_loss: float


@dataclass
class StageCost:
    """What a stage cost: training seconds and images through the student and the teacher.

    `teacher_images` counts teacher forwards (its own training and the outputs cached or computed for the
    student); `cache_seconds` is the part of `seconds` spent computing teacher outputs. `details` holds the
    stage's own facts (cache key and hit, temperature, views, the teacher's probe and finetune) as JSON.
    """

    seconds: float
    student_images: int = 0
    teacher_images: int = 0
    cache_seconds: float = 0.0
    fit: FitInfo | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StageCost:
        fit = FitInfo(**d["fit"]) if d.get("fit") else None
        teacher = d.get("teacher_images", d.get("teacher_train_images", 0))  # the latter: before typed results
        return cls(float(d["seconds"]), int(d.get("student_images", 0)), int(teacher),
                   float(d.get("cache_seconds", 0.0)), fit, dict(d.get("details", {})))


@dataclass
class ModelCost:
    """A model's size and compute: name, parameters, forward GFLOPs at its input size."""

    model: str
    params: int
    gflops: float


@dataclass
class MethodRecord:
    """One method's result in one cell (budget, seed): its test metrics and what it cost.

    `extra` holds method-specific facts (TDMR's mapping and trainable fraction, for example).
    """

    method: str
    task: str
    budget: int | None
    budget_unit: str
    seed: int
    metrics: Metrics
    stage_seconds: dict[str, float]
    teacher_images: int
    student_images: int
    student: ModelCost
    teacher: ModelCost | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # test scores of the method's stages that were evaluated, by stage name (e.g. the distilled student before
    # stage 3), so a report can show what each stage changed
    stage_scores: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return round(sum(self.stage_seconds.values()), 2)

    def to_json(self) -> dict[str, Any]:
        """A flat record (the sweep report reads `method`, `budget`, `seed`, the scores and `seconds`)."""
        rec: dict[str, Any] = {"schema": METRICS_SCHEMA, "method": self.method, "task": self.task,
                               "budget": self.budget, "budget_unit": self.budget_unit, "seed": self.seed}
        metrics = self.metrics.to_json()
        metrics.pop("confusion_matrix", None)
        metrics.pop("seconds", None)
        rec.update(metrics)
        rec.update({"seconds": self.seconds, "stage_seconds": self.stage_seconds,
                    "teacher_images": self.teacher_images, "student_images": self.student_images,
                    "model": self.student.model, "params": self.student.params, "gflops": self.student.gflops})
        if self.teacher is not None:
            rec.update({"teacher_model": self.teacher.model, "teacher_params": self.teacher.params,
                        "teacher_gflops": self.teacher.gflops})
        if self.stage_scores:
            rec["stage_scores"] = self.stage_scores
        rec.update(self.extra)
        return rec
