"""An ensemble teacher: several classifiers, each at its own input size, seen as one teacher.

The ensemble follows `TaskModel`, so every place a teacher goes (the teacher-output cache, evaluation, the
streamed distill stage, checkpoints, the run report) takes it unchanged.

Output. For member logits `z_i` (i = 1..M) and the distillation temperature `T` the ensemble returns

    out = T * log( (1/M) * sum_i softmax(z_i / T) )
        = T * ( logsumexp_i log_softmax(z_i / T) - log M )        (how it is computed: finite, no underflow)

so `softmax(out / T) = (1/M) * sum_i softmax(z_i / T)` exactly: a student distilled at temperature T (from cached
`full` logits, `topk` probabilities at T, or on the fly) learns the average of the members' softened outputs,
which is the point of an ensemble teacher. The ensemble's decision (test accuracy, pseudo-labels) is the
argmax of that same average. At T = 1 it is the plain average of the members' probabilities. `out` is a
vector of log-probabilities times T, so it is also a valid set of logits for anything else. The temperature
is fixed when the ensemble is built (the run's `distill.temperature`), recorded in its spec (checkpoints)
and in its cache signature (a cache built at another temperature is another entry).

Input. Members may want different input sizes and statistics, but a teacher is fed one tensor made by
`data.views.model_input(images, teacher.preprocess, views)`. The ensemble's `preprocess` is therefore the
identity statistics (mean 0, std 1) at the largest member size `S`: it receives the view rendered in [0, 1]
at `S`, and each member gets it resized to its own side (bilinear, antialiased when shrinking, as `render`
does) and normalized with its own mean and std. When the stored images are `S` pixels wide (the default:
`data.load_size` is the largest model input size of the run) every member sees exactly the pixels it would
see as a single teacher.

Features (the task-agnostic baseline matches the frozen teacher's pooled features): the concatenation of the
members' pooled features, each scaled to unit L2 norm, so every member weighs the same in the cosine or
contrastive match whatever its width and scale (`num_features` is the sum of the members' widths).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from taskdistill.data.preprocess import Preprocess
from taskdistill.data.views import normalize
from taskdistill.errors import ConfigError
from taskdistill.models.registry import ModelSpec, rebuild_model

PREFIX = "ensemble:"
IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # the ensemble's own statistics: [0, 1] pixels pass through


def average_softened(logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """`T * log(mean_i softmax(z_i / T))` of member logits `z_i` `[B, K]`, computed in float32."""
    t = float(temperature)
    logp = torch.stack([F.log_softmax(z.float() / t, dim=-1) for z in logits])
    return t * (torch.logsumexp(logp, dim=0) - math.log(len(logits)))


class EnsembleTeacher(nn.Module):
    """Members (classifiers of the same classes, each with `.spec` and `.preprocess`) behind one teacher.

    See the module docstring for the output formula, the input handling and the features.
    """

    def __init__(self, members: list[nn.Module], temperature: float) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if temperature <= 0:
            raise ValueError(f"the ensemble temperature must be positive, got {temperature}")
        classes = {int(m.spec.num_classes) for m in members}
        if len(classes) != 1:
            raise ValueError(f"ensemble members must predict the same classes, got class counts {sorted(classes)}")
        self.members = nn.ModuleList(members)
        self.temperature = float(temperature)
        size = max(int(m.preprocess.input_size) for m in members)
        self.preprocess = Preprocess(IDENTITY[0], IDENTITY[1], size)
        self.spec = self._spec()

    # ---- what it is -----------------------------------------------------------------------------------------
    def _spec(self) -> ModelSpec:
        members = [{"spec": m.spec.to_dict(), "preprocess": m.preprocess.to_dict()} for m in self.members]
        name = PREFIX + "+".join(m.spec.name for m in self.members)
        return ModelSpec(name=name, num_classes=int(self.members[0].spec.num_classes),
                         input_size=self.preprocess.input_size,
                         kwargs={"members": members, "temperature": self.temperature})

    @property
    def num_classes(self) -> int:
        return int(self.spec.num_classes)

    @property
    def num_features(self) -> int:
        return sum(int(m.num_features) for m in self.members)

    def cache_signature(self) -> dict[str, Any]:
        """What besides the weights shapes the outputs: each member's architecture and input transform, the
        temperature, and the ensemble's own input (teacher-output cache keys)."""
        return {"preprocess": self.preprocess.to_dict(), "temperature": self.temperature,
                "ensemble": [{"name": m.spec.name, "preprocess": m.preprocess.to_dict()} for m in self.members]}

    # ---- forward --------------------------------------------------------------------------------------------
    def member_input(self, member: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's input (`[B, 3, S, S]` in [0, 1]) as `member` wants it: its side, its statistics."""
        size = int(member.preprocess.input_size)
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < max(x.shape[-2:]))
        return normalize(x, member.preprocess).contiguous(memory_format=torch.channels_last)

    def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's logits `[B, K]` for the ensemble's input `x`."""
        return [m(self.member_input(m, x)) for m in self.members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return average_softened(self.member_logits(x), self.temperature)

    def forward_features(self, x: torch.Tensor) -> list[Any]:
        """Each member's backbone features (a list, one entry per member)."""
        return [m.forward_features(self.member_input(m, x)) for m in self.members]

    def forward_head(self, feats: list[Any], pre_logits: bool = False) -> torch.Tensor:
        """The ensemble output from the members' features, or (`pre_logits`) the concatenation of the members'
        unit-norm pooled features `[B, sum of widths]`."""
        if pre_logits:
            return torch.cat([F.normalize(m.forward_head(f, pre_logits=True).float(), dim=-1)
                              for m, f in zip(self.members, feats, strict=True)], dim=-1)
        return average_softened([m.forward_head(f) for m, f in zip(self.members, feats, strict=True)], self.temperature)

    # ---- heads ----------------------------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        """Every member's head (a ModuleList: its parameters are all the ensemble's head parameters)."""
        return nn.ModuleList([m.get_classifier() for m in self.members])

    def reset_classifier(self, num_classes: int) -> None:
        for m in self.members:
            m.reset_classifier(num_classes)
            m.spec = ModelSpec(m.spec.name, num_classes, m.spec.input_size, dict(m.spec.kwargs))
        self.spec = self._spec()


def is_ensemble(model: nn.Module) -> bool:
    return isinstance(model, EnsembleTeacher)


def ensemble_from_spec(num_classes: int, members: list[dict[str, Any]] | None = None,
                       temperature: float | None = None) -> EnsembleTeacher:
    """The ensemble a checkpoint's spec describes (members with random weights, each with its recorded input
    transform); `registry.create_model` calls it for an `ensemble:` name."""
    if not members or temperature is None:
        raise ConfigError("an ensemble teacher is configured with teacher.ensemble (a list of model sections added "
                          "to teacher.model), not by an 'ensemble:' model name")
    built = []
    for m in members:
        spec = ModelSpec.from_dict(m["spec"])
        if spec.num_classes != num_classes:
            spec = ModelSpec(spec.name, num_classes, spec.input_size, spec.kwargs)
        model = rebuild_model(spec)
        model.preprocess = Preprocess.from_dict(m["preprocess"])
        built.append(model)
    return EnsembleTeacher(built, float(temperature))
