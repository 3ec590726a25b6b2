"""Progressive distillation from the reprogrammed teacher's proxy space into the student (TDMR, part 2).

The student carries a second, temporary head: a `Linear` from its pooled features to the teacher's
source classes (the proxy head). On the transfer set, with the teacher's outputs cached per (image, view),

    loss_t = (1 - w_t) * KL(p_src^T1 || q_proxy^T1) * T1^2  +  w_t * KL(p_tgt^T2 || q_task^T2) * T2^2

where p_src = the prompted teacher's source-class distribution, p_tgt = its mapped target-class
prediction, q_proxy / q_task the student's proxy / task heads, and w_t from `schedule.task_weight`.
The proxy head is thrown away afterwards (`ProxyStudent.student` is the plain model).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from taskdistill.cache.teacher_outputs import TeacherOutputs
from taskdistill.data.views import model_input, replay_views
from taskdistill.engine.batches import Batch
from taskdistill.losses.kd import kd_kl_loss, kd_kl_loss_from_probs
from taskdistill.models.base import Preprocess
from taskdistill.reprogram.schedule import WeightSchedule


class ProxyStudent(nn.Module):
    """A student (`TaskModel`) plus a proxy head `Linear(num_features, num_source)` on its pooled features.

    `forward(x)` on normalised `[B, 3, S, S]` runs the backbone once and returns
    `{"task_logits": [B, T], "proxy_logits": [B, num_source]}`; the task logits are exactly the
    student's own `forward(x)` (its classifier applied to `forward_head(..., pre_logits=True)`).
    `num_source=None` builds no proxy head (a schedule without the proxy term).
    """

    def __init__(self, student: nn.Module, num_source: int | None) -> None:
        super().__init__()
        if num_source is not None and num_source <= 0:
            raise ValueError(f"num_source must be positive (the teacher's source classes), got {num_source}")
        self.student = student
        ref = next(student.parameters())
        self.proxy_head: nn.Linear | None = None
        if num_source is not None:
            self.proxy_head = nn.Linear(int(student.num_features), num_source).to(ref.device)

    @property
    def preprocess(self) -> Preprocess:
        """The student's input transform (the proxy head adds none)."""
        return self.student.preprocess

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`[B, 3, S, S]` -> `{"task_logits": [B, T], "proxy_logits": [B, num_source]}` (no proxy logits
        without a proxy head)."""
        pooled = self.student.forward_head(self.student.forward_features(x), pre_logits=True)
        out = {"task_logits": self.student.get_classifier()(pooled)}
        if self.proxy_head is not None:
            out["proxy_logits"] = self.proxy_head(pooled)
        return out


def _kl(logits: torch.Tensor, target: torch.Tensor, outputs: TeacherOutputs, temperature: float) -> torch.Tensor:
    if outputs.is_probabilities:
        return kd_kl_loss_from_probs(logits, target, temperature)
    return kd_kl_loss(logits, target, temperature)


def _check_temperature(outputs: TeacherOutputs, temperature: float, what: str) -> None:
    stored = outputs.temperature
    if outputs.is_probabilities and stored is not None and abs(stored - temperature) > 1e-6:
        raise ValueError(f"the cached {what} soft labels were taken at temperature {stored}, the {what} term "
                         f"uses {temperature}; rebuild that cache at the distillation temperature")


class ProxyDistillTask:
    """Loop task for `ProxyStudent` on `{"images", "indices", "views"}` batches (`ViewBatches`).

    `source_outputs` `[N, V, S]`: the reprogrammed teacher's source logits (or top-k probabilities at
    `proxy_temperature`) per (transfer image, view); `target_outputs` `[N, V, T]`: its target logits.
    Either may be None when `schedule` never weighs its term. The weight follows the task's own step
    counter: every call in training mode is one optimizer step of `fit`, and `total_steps` (from
    `schedule.planned_steps`) is the horizon. Returns `{"loss", "kl_proxy", "kl_task", "w", "agree"}`
    (`kl_*` are NaN when that term has no outputs; `agree` = student task argmax == teacher's).
    """

    def __init__(self, model: ProxyStudent, source_outputs: TeacherOutputs | torch.Tensor | None,
                 target_outputs: TeacherOutputs | torch.Tensor | None, schedule: WeightSchedule, total_steps: int,
                 proxy_temperature: float = 2.0, task_temperature: float = 2.0, view_seed: int = 0) -> None:
        if proxy_temperature <= 0 or task_temperature <= 0:
            raise ValueError(f"temperatures must be positive, got proxy {proxy_temperature}, task {task_temperature}")
        if schedule.uses_proxy and source_outputs is None:
            raise ValueError(f"schedule {schedule.kind!r} weighs the proxy term but no source outputs were given; "
                             f"cache the teacher's source_logits or use the 'one-shot' schedule")
        if schedule.uses_task and target_outputs is None:
            raise ValueError(f"schedule {schedule.kind!r} weighs the task term but no target outputs were given; "
                             f"cache the teacher's target_logits")
        self.model = model
        self.source = TeacherOutputs.wrap(source_outputs) if source_outputs is not None else None
        self.target = TeacherOutputs.wrap(target_outputs) if target_outputs is not None else None
        if self.source is not None:
            _check_temperature(self.source, proxy_temperature, "proxy")
            width = model.proxy_head.out_features if model.proxy_head is not None else None
            if self.source.shape[2] != width:
                raise ValueError(f"source outputs have {self.source.shape[2]} classes, the proxy head {width}; "
                                 f"build ProxyStudent with num_source={self.source.shape[2]}")
        if self.target is not None:
            _check_temperature(self.target, task_temperature, "task")
        self.schedule = schedule
        self.total_steps = int(total_steps)
        self.proxy_temperature = float(proxy_temperature)
        self.task_temperature = float(task_temperature)
        self.view_seed = view_seed
        self.step = 0
        self.training = False

    def state_dict(self) -> dict[str, int]:
        """The step the weight schedule is at (saved in mid-stage checkpoints, `engine.train_state`)."""
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """Student and proxy head parameters."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)
        self.training = mode

    def weight(self) -> float:
        """w for the next call."""
        return self.schedule.at(self.step, self.total_steps)

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        w = self.weight()
        if self.training:
            self.step += 1
        indices, view_ids = batch["indices"].cpu(), batch["views"].cpu()
        x = model_input(batch["images"], self.model.preprocess, replay_views(indices, view_ids, self.view_seed))
        out = self.model(x)
        nan = x.new_tensor(float("nan"))
        loss = x.new_zeros(())
        kl_proxy = kl_task = nan
        agree = nan
        if self.source is not None:
            target = self.source.gather(indices, view_ids).to(x.device)
            kl_proxy = _kl(out["proxy_logits"], target, self.source, self.proxy_temperature)
            loss = loss + (1.0 - w) * kl_proxy
        if self.target is not None:
            target = self.target.gather(indices, view_ids).to(x.device)
            kl_task = _kl(out["task_logits"], target, self.target, self.task_temperature)
            loss = loss + w * kl_task
            agree = (out["task_logits"].detach().argmax(1) == target.argmax(1)).float().mean()
        return {"loss": loss, "kl_proxy": kl_proxy.detach(), "kl_task": kl_task.detach(), "w": x.new_tensor(w),
                "agree": agree}
