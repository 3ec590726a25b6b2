"""A frozen teacher reprogrammed for the target task, and the loop task that trains its prompt and map.

    uint8 images [B, C, H, W] --render--> [B, 3, s, s] in [0, 1] --prompt--> [B, 3, S, S] normalised
        --frozen teacher--> features [B, D] --teacher head--> source logits [B, S_cls]
        --label map (on logits, or on features)--> target logits [B, T]

Only the prompt and the label map train; the teacher's weights and batch-norm statistics never change.
The reprogrammed teacher can be handed to `taskdistill.cache.cached_teacher_outputs` like a plain teacher:
its `cache_outputs` / `cache_signature` give the proxy-space outputs (`OUTPUT_KINDS`) and what shapes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taskdistill.data.image_rows import Images
from taskdistill.data.views import Views, random_views, render
from taskdistill.engine.batches import Batch, batch_rows
from taskdistill.engine.inference import batched_inference
from taskdistill.reprogram.visual_prompt import VisualPrompt

HeadInput = Literal["logits", "features"]
OUTPUT_KINDS: tuple[str, ...] = ("source_logits", "target_logits", "features")


class ReprogrammedTeacher(nn.Module):
    """Frozen `teacher` (a `TaskModel`) + trainable `prompt` + output `head` (`MappedHead`/`LinearLabelMap`).

    The constructor freezes the teacher in place (`requires_grad=False` on every parameter) and puts
    it in eval mode; `train(mode)` never takes it out (no batch-norm updates, no dropout).
    `head_input="logits"` feeds the teacher's source logits to the head, `"features"` its pooled
    pre-logit features (then a `LinearLabelMap(num_features, T)` is a linear probe behind a prompt).
    """

    def __init__(self, teacher: nn.Module, prompt: VisualPrompt, head: nn.Module,
                 head_input: HeadInput = "logits") -> None:
        super().__init__()
        if head_input not in ("logits", "features"):
            raise ValueError(f"head_input must be 'logits' or 'features', got {head_input!r}")
        self.teacher = teacher
        self.prompt = prompt
        self.head = head
        self.head_input = head_input
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> ReprogrammedTeacher:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, images: torch.Tensor, views: Views | None = None) -> dict[str, torch.Tensor]:
        """uint8 `[B, C, H, W]` (C = 1 or 3), optional crop/flip `views` -> `{"target_logits": [B, T],
        "source_logits": [B, S], "features": [B, D]}`."""
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8 [B, C, H, W], got {images.dtype}")
        x = self.prompt(render(images, self.prompt.image_size, views))
        tokens = self.teacher.forward_features(x)
        features = self.teacher.forward_head(tokens, pre_logits=True)
        source_logits = self.teacher.forward_head(tokens)
        target_logits = self.head(source_logits if self.head_input == "logits" else features)
        return {"target_logits": target_logits, "source_logits": source_logits, "features": features}

    def cache_outputs(self, images: torch.Tensor, views: Views | None, kind: str) -> torch.Tensor:
        """One output of `forward` for the teacher-output cache: `kind` in `OUTPUT_KINDS` -> `[B, K]`
        (`K` = source classes, target classes or feature width). The cache calls it in inference mode."""
        if kind not in OUTPUT_KINDS:
            raise ValueError(f"a reprogrammed teacher caches one of {OUTPUT_KINDS}, not {kind!r}; "
                             f"pick the kind that matches the loss (source_logits for the proxy term)")
        return self(images, views)[kind]

    def cache_signature(self) -> dict[str, Any]:
        """What besides the weights (teacher + prompt + map, hashed by the cache) shapes the outputs."""
        prompt = self.prompt
        spec = getattr(self.teacher, "spec", None)
        return {
            "reprogrammed": True,
            "prompt": type(prompt).__name__,
            "input_size": prompt.input_size,
            "image_size": prompt.image_size,
            "pad": getattr(prompt, "pad", None),
            "fill": getattr(prompt, "fill", None),
            "preprocess": prompt.preprocess.to_dict(),
            "head": type(self.head).__name__,
            "head_input": self.head_input,
            "teacher": spec.to_dict() if spec is not None else type(self.teacher).__name__,
        }

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The prompt's and the label map's parameters; never the teacher's."""
        params = list(self.prompt.parameters()) + list(self.head.parameters())
        return [p for p in params if p.requires_grad]

    @property
    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    @property
    def num_teacher_parameters(self) -> int:
        return sum(p.numel() for p in self.teacher.parameters())

    def trainable_fraction(self) -> float:
        """Trainable parameters (prompt + map) / teacher parameters."""
        return self.num_trainable / max(1, self.num_teacher_parameters)


@torch.no_grad()
def predict_outputs(model: ReprogrammedTeacher, images: Images, kind: str = "target_logits",
                    batch_size: int = 256, device: torch.device | str | None = None) -> torch.Tensor:
    """One output of the reprogrammed teacher (`kind` in `OUTPUT_KINDS`) for uint8 `images` `[N, C, H, W]`
    on plain views, in eval mode: float32 `[N, K]` on the cpu (e.g. target logits for test accuracy)."""
    was_training = model.training
    model.eval()
    device = device if device is not None else next(model.teacher.parameters()).device
    try:
        return batched_inference(lambda x, v: model.cache_outputs(x, None, kind), images, batch_size, device,
                                 progress=False)
    finally:
        model.train(was_training)


@torch.no_grad()
def source_probabilities(model: ReprogrammedTeacher, images: Images, batch_size: int = 256,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """Softmax over the teacher's source classes `[N, S]` (cpu, float32) for uint8 `images` `[N, C, H, W]`,
    seen through the current prompt; the input to `frequency_label_mapping` / `iterative_label_mapping`.
    """
    return predict_outputs(model, images, "source_logits", batch_size, device).softmax(1)


class ReprogramTask:
    """Loop task: cross-entropy of the target logits on `{"images": uint8 [B, C, H, W], "labels": [B]}`.

    `augment`: "crop-flip" (random-resized crops + flips, as `SupervisedTask`), "flip" or "none".
    Returns `{"loss", "ce", "acc"}`; trains only `model.trainable_parameters()`.
    """

    def __init__(self, model: ReprogrammedTeacher, augment: str = "crop-flip", label_smoothing: float = 0.0,
                 seed: int = 0) -> None:
        if augment not in ("crop-flip", "flip", "none"):
            raise ValueError(f"augment must be 'crop-flip', 'flip' or 'none', got {augment!r}")
        self.model = model
        self.augment = augment
        self.label_smoothing = label_smoothing
        self.rng = np.random.default_rng(seed)

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return self.model.trainable_parameters()

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)  # the teacher stays in eval mode

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        images, labels = batch["images"], batch["labels"]
        views = None
        if self.augment != "none":
            # Drawn for the global batch under DDP (every rank the same draws), then this rank's rows.
            total, rows = batch_rows(batch, len(images))
            drawn = random_views(total, self.rng, crop=self.augment == "crop-flip", flip=True)
            views = Views(drawn.boxes[rows], drawn.flips[rows])
        logits = self.model(images, views)["target_logits"]
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        acc = (logits.detach().argmax(1) == labels).float().mean()
        return {"loss": loss, "ce": loss.detach(), "acc": acc}
