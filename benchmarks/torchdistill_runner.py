"""The same distillation run as taskdistill's stage 2, trained by torchdistill (1.1.3) instead.

Run only from the benchmark environment (`.venv-bench`: taskdistill installed editable plus
`torchdistill==1.1.3`); torchdistill is not a taskdistill dependency.

`run_torchdistill` trains `student` on `train_images[train_idx]` with torchdistill's own machinery:
a `DistillationBox` from `get_distillation_box`, built from a python-dict training config (the dict
form of torchdistill's YAML configs, see `train_config`), whose data loader, teacher/student
forwards, `WeightedSumLoss` + `KDLoss` criterion, optimizer step and step-wise LR scheduler are all
torchdistill's; our loop only calls the box's `pre_epoch_process` / `forward_process` /
`post_forward_process` / `post_epoch_process`, as torchdistill's example trainers do. The teacher is
forwarded on every step (torchdistill's default; no `cache_output`), where taskdistill forwards it
once per (image, view) into a cache and replays the logits.

What is matched to taskdistill's `distill` stage (`kinds/classification.py`, `tasks/distill.py`,
`engine/loop.py`), so that the runs differ only in the framework:

- loss: `KDLoss(alpha=0, reduction="batchmean")` weighted by T^2 in `WeightedSumLoss`, i.e.
  KL(p_T || q_T) * T^2 averaged over the batch = `taskdistill.losses.kd.kd_kl_loss`. (In torchdistill,
  `alpha` weights the hard-label cross-entropy and the T^2 factor is applied only on that mixed path;
  `alpha=0` returns the bare soft KL, hence the T^2 term weight.)
- optimizer: AdamW, `lr`, `weight_decay` on >= 2-d parameters only, fused kernel: taskdistill's
  `build_optimizer`, registered as a torchdistill optimizer (`register_optimizer`) and chosen by key.
- schedule: `CosineAnnealingLR(T_max=all steps, eta_min=0)` stepped after every optimizer step
  (`scheduling_step: 1`) = taskdistill's `lr_at` with no warmup (same values to ~1e-15).
- batches: the same shuffled order as taskdistill's `EpochSampler(seed)` (shuffle, drop_last), fed
  through torchdistill's `DataLoader` (per-item `__getitem__` + default collate, `num_workers=0`). The
  loader gets its own generator, so it does not advance the global RNG that dropout draws from: with
  the same global seed before both runs, the student sees the same dropout masks too.
- inputs: each model gets `taskdistill.data.views.model_input(uint8 batch, model.preprocess)` (its
  own resolution and normalisation, channels_last), done inside a thin wrapper module because
  torchdistill hands one batch to both models. The frozen teacher stays in eval mode.

Unavoidable or deliberate differences (caveats):

- Only the plain view (`distill.transfer.views: 1`, no augmentation) is reproduced: taskdistill's
  multi-view cache replays fixed crops, which has no torchdistill counterpart without an online
  augmentation that would change what is compared.
- taskdistill's default cache stores the teacher's logits as float16; torchdistill's targets are the
  live float32 logits (a rounding-level difference in the target). Top-k soft-label storage is a
  different, compressed target and not what this run reproduces.
- The teacher runs under torchdistill's `torch.no_grad()` at the training batch size; taskdistill's
  cache runs it once under `torch.inference_mode()` at the eval batch size (the logits came out
  bit-identical on CPU). The two losses agree to float32 rounding (~1e-7 relative) and so do first-step
  gradients (~3e-6 relative), but AdamW turns rounding-level gradients into +-lr steps, so trajectories
  then drift apart as much as taskdistill run against itself with teacher logits moved by one ulp:
  compare accuracies over seeds, not per run.
- `seconds` covers the training loop only (as taskdistill's `FitResult.seconds`); building the box is
  setup, evaluation is excluded. The taskdistill side must add its one-off cache-building time
  (teacher forwards) to compare end to end.
- taskdistill's loop also checks the loss for NaN every step, computes an agreement metric and drives
  a progress bar; torchdistill's example loop logs `loss.item()` each step. Both are negligible here
  and left out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler
from torchdistill.core.distillation import get_distillation_box
from torchdistill.optim.registry import register_optimizer

from taskdistill.data.views import model_input
from taskdistill.engine.batches import EpochSampler
from taskdistill.engine.evaluate import evaluate
from taskdistill.engine.loop import Schedule, build_optimizer

OPTIMIZER_KEY = "taskdistill_adamw"


@register_optimizer(key=OPTIMIZER_KEY)
def _adamw_as_taskdistill(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """torchdistill hands a registered optimizer the trainable parameters (`filters_params: True`)."""
    return build_optimizer(list(params), Schedule(epochs=1, batch_size=1, lr=lr, weight_decay=weight_decay))


class _UInt8Images(Dataset):
    """`(uint8 [C, H, W] image, index)` per item; the index only fills torchdistill's target slot."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i


class _EpochOrder(Sampler[int]):
    """Item order of taskdistill's `EpochSampler(shuffle=True, seed, drop_last=True)`, one epoch at a time.

    torchdistill calls it as `class_or_func(dataset, **kwargs)`; the DataLoader batches it with the same
    batch size and `drop_last`, which gives exactly taskdistill's batches.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int) -> None:
        self.inner = EpochSampler(len(dataset), batch_size, shuffle=True, seed=seed, drop_last=True)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        for batch in self.inner:
            yield from batch.tolist()

    def __len__(self) -> int:
        return len(self.inner) * self.inner.batch_size


class _OnUInt8(nn.Module):
    """`model` fed a uint8 batch: converts it to the model's own input, then forwards."""

    def __init__(self, model: nn.Module, frozen: bool = False) -> None:
        super().__init__()
        self.model = model
        self.frozen = frozen

    def train(self, mode: bool = True) -> _OnUInt8:
        super().train(False if self.frozen else mode)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(model_input(images, self.model.preprocess))


def train_config(epochs: int, batch_size: int, lr: float, weight_decay: float, temperature: float, seed: int,
                 total_steps: int) -> dict:
    """torchdistill's `train` section (what its YAML configs hold), as a python dict."""
    return {
        "num_epochs": epochs,
        "train_data_loader": {
            "dataset_id": "transfer",
            "sampler": {"class_or_func": _EpochOrder, "kwargs": {"batch_size": batch_size, "seed": seed}},
            # own generator: the loader's per-epoch base seed must not advance the global RNG (dropout masks)
            "kwargs": {"batch_size": batch_size, "num_workers": 0, "drop_last": True,
                       "generator": torch.Generator().manual_seed(seed)},
        },
        "teacher": {"forward_proc": "forward_batch_only", "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only"},
        "optimizer": {"key": OPTIMIZER_KEY, "kwargs": {"lr": lr, "weight_decay": weight_decay},
                      "filters_params": True},
        "scheduler": {"key": "CosineAnnealingLR", "kwargs": {"T_max": total_steps, "eta_min": 0.0},
                      "scheduling_step": 1},
        "criterion": {
            "key": "WeightedSumLoss",
            "kwargs": {"sub_terms": {"kd": {
                "criterion": {"key": "KDLoss", "kwargs": {
                    "student_module_path": ".", "student_module_io": "output",
                    "teacher_module_path": ".", "teacher_module_io": "output",
                    "temperature": temperature, "alpha": 0.0, "reduction": "batchmean"}},
                "weight": temperature * temperature,
            }}},
        },
    }


def _num_classes(student: nn.Module, labels: torch.Tensor) -> int:
    head = student.get_classifier() if hasattr(student, "get_classifier") else None
    k = getattr(head, "out_features", None) or getattr(student, "num_classes", 0)
    return max(int(k), int(labels.max()) + 1)


def run_torchdistill(teacher: nn.Module, student: nn.Module, train_images: torch.Tensor, train_idx: torch.Tensor,
                     test_images: torch.Tensor, test_labels: torch.Tensor, epochs: int, batch_size: int, lr: float,
                     weight_decay: float, temperature: float, seed: int, *,
                     device: torch.device | str = "cpu") -> dict:
    """Distil `teacher` into `student` (trained in place) on `train_images[train_idx]` with torchdistill.

    `train_images`: uint8 `[N, C, H, W]`; `train_idx`: indices of the transfer images in it (their order
    is the dataset order the shuffle permutes, as in taskdistill's transfer `ImageSet`). Returns
    `{"seconds": training-loop seconds, "top1": student test top-1 as a fraction in [0, 1] (as
    `evaluate` gives it, not percent), "images": images trained on, "steps": optimizer steps}`.
    Thread count is left as the caller set it.
    """
    device = torch.device(device)
    idx = torch.as_tensor(train_idx, dtype=torch.long)
    if train_images.dtype != torch.uint8 or train_images.ndim != 4:
        raise ValueError(f"train_images must be uint8 [N, C, H, W], got {train_images.dtype} {tuple(train_images.shape)}")
    if len(idx) == 0 or int(idx.min()) < 0 or int(idx.max()) >= len(train_images):
        raise ValueError("train_idx must be non-empty indices into train_images")
    dataset = _UInt8Images(train_images[idx].contiguous())
    steps_per_epoch = len(dataset) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} transfer images give no full batch of {batch_size}")
    total_steps = epochs * steps_per_epoch

    teacher_state = (teacher.training, [p.requires_grad for p in teacher.parameters()])
    teacher.eval()
    box = get_distillation_box(_OnUInt8(teacher, frozen=True), _OnUInt8(student), {"transfer": dataset},
                               train_config(epochs, batch_size, lr, weight_decay, temperature, seed, total_steps),
                               device, None, False, 1)
    loader = box.train_data_loader
    steps, seen = 0, 0
    try:
        start = time.perf_counter()
        for epoch in range(epochs):
            box.pre_epoch_process(epoch=epoch)
            loader.sampler.set_epoch(epoch)
            for images, targets, supp_dict in loader:
                images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                loss = box.forward_process(images, targets, supp_dict=supp_dict)
                box.post_forward_process(loss=loss)
                steps += 1
                seen += len(images)
            box.post_epoch_process()
        seconds = time.perf_counter() - start
        assert not teacher.training and steps == total_steps, (teacher.training, steps, total_steps)
    finally:
        student.train(False)
        teacher.train(teacher_state[0])
        for p, flag in zip(teacher.parameters(), teacher_state[1], strict=True):
            p.requires_grad_(flag)
    class_names = [str(k) for k in range(_num_classes(student, test_labels))]
    metrics = evaluate(student, test_images, test_labels, class_names, device=device, desc="evaluate torchdistill")
    return {"seconds": seconds, "top1": metrics["top1"], "images": seen, "steps": steps}
