import math

import pytest
import torch

from taskdistill.engine.batches import Batch
from taskdistill.engine.loop import Schedule, fit
from taskdistill.reprogram.schedule import WeightSchedule, planned_steps, task_weight


@pytest.mark.parametrize(("step", "expected"), [(0, 0.0), (1, 0.2), (2, 0.4), (5, 1.0), (9, 1.0)])
def test_linear_ramp_over_half_of_ten_steps(step: int, expected: float):
    assert task_weight(step, 10, "progressive", ramp_fraction=0.5) == pytest.approx(expected)


@pytest.mark.parametrize(("step", "expected"), [(0, 0.0), (2, 0.5 * (1 - math.cos(math.pi * 0.25))), (4, 0.5),
                                                (8, 1.0), (15, 1.0)])
def test_cosine_ramp(step: int, expected: float):
    assert task_weight(step, 16, "progressive", ramp_fraction=0.5, shape="cosine") == pytest.approx(expected)


def test_full_ramp_never_quite_reaches_one_and_ceil_rounds_the_ramp_length():
    assert task_weight(99, 100, "progressive", ramp_fraction=1.0) == pytest.approx(0.99)
    assert task_weight(1, 3, "progressive", ramp_fraction=0.5) == pytest.approx(0.5)  # ramp = ceil(1.5) = 2


def test_one_shot_joint_and_zero_ramp_are_constant():
    for step in (0, 3, 9):
        assert task_weight(step, 10, "one-shot") == 1.0
        assert task_weight(step, 10, "joint", joint_weight=0.3) == 0.3
        assert task_weight(step, 10, "progressive", ramp_fraction=0.0) == 1.0


def test_weight_schedule_says_which_terms_it_needs_and_rejects_bad_settings():
    assert WeightSchedule("progressive").uses_proxy and WeightSchedule("progressive").uses_task
    assert not WeightSchedule("one-shot").uses_proxy
    assert not WeightSchedule("joint", joint_weight=1.0).uses_proxy
    assert not WeightSchedule("joint", joint_weight=0.0).uses_task
    assert not WeightSchedule("progressive", ramp_fraction=0.0).uses_proxy
    assert WeightSchedule("progressive", 0.5, "cosine").at(4, 16) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule kind"):
        WeightSchedule("progresive")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ramp_fraction"):
        task_weight(0, 10, ramp_fraction=1.5)
    with pytest.raises(ValueError, match="ramp shape"):
        task_weight(0, 10, shape="step")


class Counter:
    """A do-nothing task with one parameter: counts its calls."""

    def __init__(self) -> None:
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def trainable_parameters(self):
        return [self.p]

    def train(self, mode: bool = True) -> None:
        pass

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {"loss": (self.p ** 2).sum()}


class Items:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, indices: torch.Tensor, epoch: int) -> Batch:
        return {"indices": indices}


@pytest.mark.parametrize(("n", "schedule"), [
    (10, Schedule(epochs=3, batch_size=4, lr=0.1)),  # drop_last: 2 batches per epoch
    (3, Schedule(epochs=2, batch_size=8, lr=0.1)),  # fewer items than a batch: 1 batch per epoch
    (10, Schedule(epochs=1, batch_size=4, lr=0.1, min_steps=7)),  # epochs raised to reach min_steps
])
def test_planned_steps_matches_what_fit_runs(n: int, schedule: Schedule):
    task = Counter()
    result = fit(task, Items(n), schedule, progress=False)
    assert planned_steps(n, schedule) == result.steps == task.calls
