"""GPU-grade execution of the one training loop, on the CPU: precision, prefetching, no per-step syncs,
mid-stage checkpoints that resume exactly, the scalar log (issue 17)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from taskdistill.config.schema import RunConfig
from taskdistill.data.image_set import ImageSet
from taskdistill.engine.batches import ImageBatches, ViewBatches
from taskdistill.engine.loop import LoopOptions, Schedule, fit, loop_options, scaled_schedule
from taskdistill.engine.precision import resolve_precision
from taskdistill.engine.prefetch import ahead
from taskdistill.errors import CheckpointError
from taskdistill.models.registry import create_model
from taskdistill.tasks import DistillTask, SupervisedTask

N, K = 48, 3


def image_set(n: int = N) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (n, 3, 20, 20), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(n) % K, [f"img/{i}" for i in range(n)], ["a", "b", "c"])


def distill_task(seed: int = 0) -> DistillTask:
    torch.manual_seed(seed)
    student = create_model("resnet10t", K, input_size=16)
    teacher = torch.randn(N, 2, K, generator=torch.Generator().manual_seed(1))
    return DistillTask(student, teacher, temperature=2.0, view_seed=0)


def supervised_task(seed: int = 0, augment: str = "crop-flip") -> SupervisedTask:
    torch.manual_seed(seed)
    return SupervisedTask(create_model("resnet10t", K, input_size=16), augment=augment, seed=seed)


SCHEDULE = Schedule(epochs=2, batch_size=8, lr=1e-3)  # 6 steps per epoch, 12 in all


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class Crash(Exception):
    pass


class CrashAt:
    """The task, raising at its `at`-th call (a run killed mid-stage)."""

    def __init__(self, task: object, at: int) -> None:
        self.inner, self.at, self.calls = task, at, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def modules(self) -> list[torch.nn.Module]:
        return [v for v in vars(self.inner).values() if isinstance(v, torch.nn.Module)]

    def __call__(self, batch: dict) -> dict:
        self.calls += 1
        if self.calls == self.at:
            raise Crash(f"killed at call {self.calls}")
        return self.inner(batch)


def test_prefetch_yields_the_same_items_in_the_same_order() -> None:
    items = list(range(50))
    for depth in (0, 1, 3):
        assert list(ahead(iter(items), lambda i: i * i, depth)) == [i * i for i in items]
    with pytest.raises(ValueError, match="bad 7"):
        list(ahead(iter(items), lambda i: i if i != 7 else (_ for _ in ()).throw(ValueError("bad 7")), 2))


def test_prefetching_does_not_change_the_training() -> None:
    results = []
    for prefetch in (0, 2):
        task = supervised_task()
        r = fit(task, ImageBatches(image_set()), SCHEDULE, progress=False, options=LoopOptions(prefetch=prefetch))
        results.append((weights(task.model), r.last_loss))
    assert_same(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_default_options_train_exactly_as_fp32_without_options() -> None:
    a, b = distill_task(), distill_task()
    src = ViewBatches(image_set(), 2, seed=0)
    ra = fit(a, src, SCHEDULE, progress=False)
    rb = fit(b, src, SCHEDULE, progress=False, options=LoopOptions(precision="auto", prefetch=0))
    assert ra.precision == rb.precision == "fp32"  # auto is fp32 on the CPU
    assert_same(weights(a.student), weights(b.student))
    assert ra.last_loss == rb.last_loss


def test_auto_precision_is_fp32_on_cpu() -> None:
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_bf16_autocast_runs_a_tiny_distillation_on_cpu() -> None:
    task = distill_task()
    before = weights(task.student)
    seen: list[torch.dtype] = []
    task.student.fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    r = fit(task, ViewBatches(image_set(), 2, seed=0), SCHEDULE, progress=False, options=LoopOptions(precision="bf16"))
    assert r.precision == "bf16" and r.steps == 12
    assert seen and all(d == torch.bfloat16 for d in seen)  # the student really ran under autocast
    assert torch.isfinite(torch.tensor(r.last_loss))
    assert any(not torch.equal(before[k], v) for k, v in weights(task.student).items())
    assert all(p.dtype == torch.float32 for p in task.student.parameters())  # master weights stay fp32


def test_fp16_uses_a_grad_scaler_and_trains() -> None:
    task = distill_task()
    r = fit(task, ViewBatches(image_set(), 2, seed=0), SCHEDULE, progress=False, options=LoopOptions(precision="fp16"))
    assert r.precision == "fp16" and torch.isfinite(torch.tensor(r.last_loss))


@pytest.mark.parametrize("kind", ["distill", "supervised"])
def test_a_stage_killed_mid_epoch_resumes_to_the_same_weights_and_loss(tmp_path: Path, kind: str) -> None:
    make = distill_task if kind == "distill" else supervised_task
    source = ViewBatches(image_set(), 2, seed=0) if kind == "distill" else ImageBatches(image_set())
    module = (lambda t: t.student) if kind == "distill" else (lambda t: t.model)
    plain = make()
    ref = fit(plain, source, SCHEDULE, progress=False)

    ckpt = tmp_path / "train_state.pt"
    opts = LoopOptions(checkpoint_path=ckpt, checkpoint_every_steps=2, log_path=tmp_path / "scalars.csv",
                       log_every_steps=3)
    crashed = make()
    with pytest.raises(Crash):
        fit(CrashAt(crashed, 10), source, SCHEDULE, progress=False, options=opts)  # killed in step 10 (epoch 2)
    assert ckpt.is_file()
    torch.manual_seed(1234)  # a fresh process: other global RNG state, fresh weights
    resumed_task = make(seed=7)
    resumed = fit(resumed_task, source, SCHEDULE, progress=False, options=opts)
    assert resumed.resumed_at == 8 and resumed.steps == 12 and resumed.images_seen == ref.images_seen
    assert_same(weights(module(plain)), weights(module(resumed_task)))
    assert resumed.last_loss == ref.last_loss
    assert not ckpt.exists()  # deleted when the stage completes
    rows = list(csv.DictReader((tmp_path / "scalars.csv").open()))
    steps = [int(r["step"]) for r in rows if r["kind"] == "step"]
    # every 3 steps and at each checkpoint (every 2); rows the killed run wrote after step 8 were dropped
    assert steps == [2, 3, 4, 6, 8, 9, 10, 12]


def test_a_checkpoint_of_another_stage_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "train_state.pt"
    opts = LoopOptions(checkpoint_path=ckpt, checkpoint_every_steps=2)
    source = ViewBatches(image_set(), 2, seed=0)
    with pytest.raises(Crash):
        fit(CrashAt(distill_task(), 5), source, SCHEDULE, progress=False, options=opts)
    other = Schedule(epochs=2, batch_size=8, lr=2e-3)
    with pytest.raises(CheckpointError, match=r"schedule.*not used"):
        fit(distill_task(), source, other, progress=False, options=opts)
    with pytest.raises(CheckpointError, match="stage"):
        fit(distill_task(), source, SCHEDULE, desc="another stage", progress=False, options=opts)
    r = fit(distill_task(), source, other, progress=False, options=LoopOptions(checkpoint_path=ckpt, resume=False))
    assert r.resumed_at == 0 and not ckpt.exists()


def test_an_unreadable_checkpoint_names_the_file(tmp_path: Path) -> None:
    ckpt = tmp_path / "train_state.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        fit(distill_task(), ViewBatches(image_set(), 2, seed=0), SCHEDULE, progress=False,
            options=LoopOptions(checkpoint_path=ckpt))


KILLED_RUN = r"""
import sys, time, torch
sys.path.insert(0, {tests!r})
from engine.test_loop_execution import distill_task, image_set, SCHEDULE
from taskdistill.engine.batches import ViewBatches
from taskdistill.engine.loop import LoopOptions, fit
from taskdistill.engine.device import set_threads
set_threads(1)
task = distill_task()
inner = task.__call__
def slow(batch):
    time.sleep(0.3)
    return inner(batch)
class Slow:
    def __init__(self, t): self.t = t
    def __getattr__(self, n): return getattr(self.t, n)
    def modules(self): return [task.student]
    def __call__(self, b): return slow(b)
fit(Slow(task), ViewBatches(image_set(), 2, seed=0), SCHEDULE, progress=False,
    options=LoopOptions(checkpoint_path={ckpt!r}, checkpoint_every_steps=3))
print("finished")
"""


def test_a_process_killed_with_sigkill_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "train_state.pt"
    script = KILLED_RUN.format(tests=str(Path(__file__).parents[1]), ckpt=str(ckpt))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    assert ckpt.exists(), err.decode()[-2000:]
    assert b"finished" not in out
    ref_task = distill_task()
    ref = fit(ref_task, ViewBatches(image_set(), 2, seed=0), SCHEDULE, progress=False)
    task = distill_task(seed=3)
    r = fit(task, ViewBatches(image_set(), 2, seed=0), SCHEDULE, progress=False,
            options=LoopOptions(checkpoint_path=ckpt, checkpoint_every_steps=3))
    assert r.resumed_at > 0 and r.last_loss == ref.last_loss
    assert_same(weights(ref_task.student), weights(task.student))


SYNCS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


def count_syncs(monkeypatch: pytest.MonkeyPatch, floats_only: bool) -> list[str]:
    """Patch the tensor methods that copy a value to the host; record the calls on float and bool tensors (the
    loss, metrics, finite flags), or on float tensors only when `floats_only`. Integer tensors are left out:
    batch indices are host data the batch source reads (and a task's view flags, when `floats_only`)."""
    calls: list[str] = []
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def patched(self: torch.Tensor, *args: object, _name: str = name, _orig: object = original, **kw: object):
            if self.is_floating_point() or (not floats_only and self.dtype == torch.bool):
                calls.append(_name)
            return _orig(self, *args, **kw)  # type: ignore[operator]

        monkeypatch.setattr(torch.Tensor, name, patched)
    return calls


@pytest.mark.parametrize("kind", ["supervised", "distill"])
def test_the_step_loop_makes_no_per_step_host_sync(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """The number of host reads does not grow with the number of steps (they happen every N steps only)."""
    counts = []
    for epochs in (2, 4):
        task = supervised_task(augment="none") if kind == "supervised" else distill_task()
        source = ImageBatches(image_set()) if kind == "supervised" else ViewBatches(image_set(), 2, seed=0)
        sched = Schedule(epochs=epochs, batch_size=8, lr=1e-3)
        with monkeypatch.context() as m:
            calls = count_syncs(m, floats_only=kind == "distill")
            fit(task, source, sched, progress=False, options=LoopOptions(log_every_steps=1000, prefetch=0))
        counts.append(len(calls))
    # epoch ends read once each: 2 more epochs may add 2 reads, 12 more steps add none
    assert counts[1] - counts[0] <= 2, counts
    if torch.cuda.is_available():  # the real thing: CUDA's sync debug mode warns at every synchronising call
        warned = []
        for epochs in (2, 4):
            task = supervised_task(augment="none")
            task.model.cuda()
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    fit(task, ImageBatches(image_set()), Schedule(epochs=epochs, batch_size=8, lr=1e-3), device="cuda",
                        progress=False, options=LoopOptions(log_every_steps=1000))
            finally:
                torch.cuda.set_sync_debug_mode(0)
            warned.append(sum("synchroniz" in str(w.message) for w in caught))
        assert warned[1] - warned[0] <= 2, warned


class NanAt:
    def __init__(self, task: SupervisedTask, at: int) -> None:
        self.inner, self.at, self.calls = task, at, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def __call__(self, batch: dict) -> dict:
        out = self.inner(batch)
        self.calls += 1
        if self.calls == self.at + 1:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_a_nan_loss_still_raises_naming_the_stage_and_step() -> None:
    with pytest.raises(FloatingPointError, match=r"finetune: loss became nan at step 3"):
        fit(NanAt(supervised_task(), 3), ImageBatches(image_set()), SCHEDULE, desc="finetune", progress=False,
            options=LoopOptions(log_every_steps=50))


def test_the_scalar_log_and_tensorboard_are_written(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    opts = LoopOptions(log_path=tmp_path / "scalars.csv", tensorboard_dir=tmp_path / "tb", log_every_steps=4)
    fit(distill_task(), ViewBatches(image_set(), 2, seed=0), SCHEDULE, progress=False, options=opts)
    rows = list(csv.DictReader((tmp_path / "scalars.csv").open()))
    # every 4 steps and at each epoch end (6 steps per epoch), then the epoch's means
    assert [(r["kind"], int(r["step"])) for r in rows] == [("step", 4), ("step", 6), ("epoch", 6), ("step", 8),
                                                           ("step", 12), ("epoch", 12)]
    assert {"loss", "kl", "agree", "lr", "images_per_s"} <= set(rows[0])
    assert all(float(r["loss"]) > 0 for r in rows)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_loop_options_from_the_config(tmp_path: Path) -> None:
    cfg = RunConfig()
    opts = loop_options(cfg, "distill", tmp_path)
    assert opts.precision == "auto" and opts.checkpoint_path == tmp_path / "train_state.pt"
    assert opts.log_path == tmp_path / "scalars.csv" and opts.tensorboard_dir is None
    assert opts.log_every_steps == 50 and opts.progress_seconds == 30.0
    cfg.execution.checkpoint_minutes = 0
    cfg.log.tensorboard = True
    opts = loop_options(cfg, "distill", tmp_path)
    assert opts.checkpoint_path is None and opts.tensorboard_dir == tmp_path / "tensorboard"
    none = loop_options(cfg, "distill", None)
    assert none.checkpoint_path is None and none.log_path is None and none.tensorboard_dir is None


def test_batch_scaling_scales_the_learning_rate_by_the_stated_rule() -> None:
    s = Schedule(epochs=1, batch_size=64, lr=1e-3)
    assert scaled_schedule(s, 1.0) is s
    assert (scaled_schedule(s, 4.0, "linear").batch_size, scaled_schedule(s, 4.0, "linear").lr) == (256, 4e-3)
    assert scaled_schedule(s, 4.0, "sqrt").lr == pytest.approx(2e-3)
    assert scaled_schedule(s, 0.5, "none").lr == 1e-3


def test_tensorboard_missing_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskdistill.engine.scalar_log import ScalarLog
    from taskdistill.errors import ConfigError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    with pytest.raises(ConfigError, match=r"taskdistill\[tensorboard\]"):
        ScalarLog(tmp_path / "s.csv", tmp_path / "tb")
    ScalarLog(tmp_path / "s.csv", None).close()  # the CSV alone never imports it


def _param_step(clip: float | None) -> float:
    """The L2 norm of one SGD step's change to the parameters (lr 1, one batch of 8, no weight decay)."""
    task = supervised_task(augment="none")
    before = {k: v.detach().clone() for k, v in task.model.named_parameters()}
    fit(task, ImageBatches(image_set(8)), Schedule(epochs=1, batch_size=8, lr=1.0, optimizer="sgd",
                                                   clip_grad_norm=clip), progress=False)
    after = dict(task.model.named_parameters())
    return float(torch.sqrt(sum(((after[k].detach() - v) ** 2).sum() for k, v in before.items())))


def test_clip_grad_norm_bounds_a_step_and_none_leaves_it() -> None:
    free, clipped = _param_step(None), _param_step(1e-3)
    # first SGD step with Nesterov momentum 0.9 from an empty buffer: change = lr * 1.9 * gradient
    assert clipped <= 1.9e-3 * 1.001
    assert free > 100 * clipped  # the unclipped gradient is far above 1e-3, so the bound did the work


def test_clip_grad_norm_from_the_config_and_an_unclipped_fingerprint_as_before() -> None:
    from taskdistill.config import load_config
    from taskdistill.engine.loop import _fingerprint
    from taskdistill.engine.schedule import schedule_of

    cfg = load_config(RunConfig, None, ["distill.train.clip_grad_norm=1.0"])
    assert schedule_of(cfg.distill.train).clip_grad_norm == 1.0
    assert schedule_of(load_config(RunConfig, None, []).distill.train).clip_grad_norm is None
    with pytest.raises(Exception, match="clip_grad_norm"):
        load_config(RunConfig, None, ["distill.train.clip_grad_norm=0"])
    fp = _fingerprint("s", SCHEDULE, 0, 1, 6, 12, N, [], "fp32")
    assert "clip_grad_norm" not in fp["schedule"]  # mid-stage checkpoints written before the key still resume
    assert _fingerprint("s", Schedule(epochs=2, batch_size=8, lr=1e-3, clip_grad_norm=1.0), 0, 1, 6, 12, N, [],
                        "fp32")["schedule"]["clip_grad_norm"] == 1.0
