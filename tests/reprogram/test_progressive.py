import copy

import pytest
import torch
from torch import nn

from taskdistill.cache.soft_labels import compress_topk
from taskdistill.cache.teacher_outputs import Storage, TeacherOutputs, cache_key, cached_teacher_outputs
from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import model_input, replay_views
from taskdistill.engine.batches import ViewBatches
from taskdistill.engine.loop import Schedule, fit
from taskdistill.models.registry import create_model
from taskdistill.reprogram import (
    FullImagePrompt,
    MappedHead,
    PaddingPrompt,
    ProxyDistillTask,
    ProxyStudent,
    ReprogrammedTeacher,
    WeightSchedule,
    planned_steps,
)

NUM_SOURCE, NUM_TARGET, N, V = 12, 3, 10, 2


def student(kind: str = "cnn") -> nn.Module:
    torch.manual_seed(0)
    if kind == "vit":
        return create_model("vit_tiny_patch16_224", NUM_TARGET, input_size=16, img_size=16, patch_size=8, depth=1,
                            embed_dim=32, num_heads=2)
    if kind == "effnet":
        return create_model("tf_efficientnet_lite0", NUM_TARGET, input_size=16)
    return create_model("resnet10t", NUM_TARGET, input_size=16)


def transfer(n: int = N) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.randint(0, 256, (n, 1, 20, 20), dtype=torch.uint8, generator=g),
                    torch.full((n,), -1), [f"t/{i}" for i in range(n)], [f"c{i}" for i in range(NUM_TARGET)])


def teacher_logits(num: int, seed: int) -> torch.Tensor:
    return torch.randn(N, V, num, generator=torch.Generator().manual_seed(seed)) * 3


def kl(p_logits_or_probs: torch.Tensor, q_logits: torch.Tensor, t: float, probs: bool = False) -> torch.Tensor:
    """KL(p || softmax(q / t)) * t^2 written out row by row: sum_k p_k (log p_k - log q_k), batch mean."""
    p = p_logits_or_probs if probs else torch.softmax(p_logits_or_probs / t, 1)
    log_q = torch.log_softmax(q_logits / t, 1)
    terms = torch.where(p > 0, p * (torch.log(p.clamp_min(1e-30)) - log_q), torch.zeros_like(p))
    return terms.sum(1).mean() * t * t


@pytest.mark.parametrize("kind", ["cnn", "vit", "effnet"])
def test_proxy_student_task_logits_are_the_students_own_and_the_head_is_separate(kind: str):
    model = student(kind).eval()
    wrapper = ProxyStudent(model, NUM_SOURCE).eval()
    x = model_input(transfer(4).images.tensor(), model.preprocess)
    out = wrapper(x)
    assert out["proxy_logits"].shape == (4, NUM_SOURCE)
    assert torch.allclose(out["task_logits"], model(x), atol=1e-5)
    assert wrapper.proxy_head.in_features == model.num_features
    names = {n for n, _ in wrapper.named_parameters()}
    assert {n for n, _ in model.named_parameters()} == {n.removeprefix("student.") for n in names
                                                       if n.startswith("student.")}
    assert not any(n.startswith("proxy_head") for n, _ in model.named_parameters())  # the student stays plain


def hand_batch(data: ImageSet) -> dict[str, torch.Tensor]:
    idx = torch.tensor([0, 3, 4, 7])
    return {"images": data.images[idx], "indices": idx, "views": torch.tensor([0, 1, 1, 0])}


@pytest.mark.parametrize("stored", ["logits", "topk"])
def test_loss_equals_its_formula_on_a_hand_made_batch(stored: str):
    data, src, tgt = transfer(), teacher_logits(NUM_SOURCE, 1), teacher_logits(NUM_TARGET, 2)
    t1, t2 = 3.0, 1.5
    if stored == "topk":  # top-4 probabilities at t1, as the cache stores the 1000-class proxy outputs
        vals, ids = compress_topk(src.reshape(N * V, -1), 4, t1)
        source = TeacherOutputs(vals.reshape(N, V, 4), ids.reshape(N, V, 4), NUM_SOURCE, temperature=t1)
    else:
        source = TeacherOutputs.wrap(src)
    wrapper = ProxyStudent(student(), NUM_SOURCE).eval()
    task = ProxyDistillTask(wrapper, source, tgt, WeightSchedule("progressive", 1.0, "linear"), total_steps=8,
                            proxy_temperature=t1, task_temperature=t2, view_seed=5)
    task.step = 2  # linear ramp over all 8 steps: w = 2 / 8
    batch = hand_batch(data)
    with torch.no_grad():
        out = task(batch)
        x = model_input(batch["images"], wrapper.preprocess, replay_views(batch["indices"], batch["views"], 5))
        heads = wrapper(x)
    i, v = batch["indices"], batch["views"]
    p_src = source.gather(i, v) if stored == "topk" else src[i, v]
    kl_proxy = kl(p_src, heads["proxy_logits"], t1, probs=stored == "topk")
    kl_task = kl(tgt[i, v], heads["task_logits"], t2)
    w = 0.25
    assert float(out["w"]) == w and task.step == 2  # eval mode: no step taken
    assert torch.allclose(out["kl_proxy"], kl_proxy, atol=1e-5)
    assert torch.allclose(out["kl_task"], kl_task, atol=1e-5)
    assert torch.allclose(out["loss"], (1 - w) * kl_proxy + w * kl_task, atol=1e-5)


def test_fit_walks_the_schedule_step_by_step_and_trains_both_heads():
    data, src, tgt = transfer(), teacher_logits(NUM_SOURCE, 1), teacher_logits(NUM_TARGET, 2)
    wrapper = ProxyStudent(student(), NUM_SOURCE)
    schedule = Schedule(epochs=3, batch_size=4, lr=1e-2)
    batches = ViewBatches(data, V, seed=0)
    total = planned_steps(len(batches), schedule)
    task = ProxyDistillTask(wrapper, src, tgt, WeightSchedule("progressive", 0.5), total)
    seen: list[float] = []
    real_call = task.__call__

    class Logging:
        def trainable_parameters(self):
            return task.trainable_parameters()

        def train(self, mode: bool = True) -> None:
            task.train(mode)

        def __call__(self, batch):
            out = real_call(batch)
            seen.append(float(out["w"]))
            return out

    head_before = copy.deepcopy(wrapper.proxy_head.state_dict())
    result = fit(Logging(), batches, schedule, progress=False)
    assert result.steps == total == task.step == 6
    assert seen == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    assert not torch.equal(head_before["weight"], wrapper.proxy_head.weight)


def test_one_shot_needs_no_proxy_head_and_bad_inputs_are_named():
    data, tgt = transfer(), teacher_logits(NUM_TARGET, 2)
    task = ProxyDistillTask(ProxyStudent(student(), None), None, tgt, WeightSchedule("one-shot"), 4)
    out = task(hand_batch(data))
    assert torch.isnan(out["kl_proxy"]) and torch.allclose(out["loss"], out["kl_task"])
    with pytest.raises(ValueError, match="no source outputs"):
        ProxyDistillTask(ProxyStudent(student(), NUM_SOURCE), None, tgt, WeightSchedule("progressive"), 4)
    with pytest.raises(ValueError, match="num_source=12"):
        ProxyDistillTask(ProxyStudent(student(), 7), teacher_logits(NUM_SOURCE, 1), tgt, WeightSchedule(), 4)
    vals, ids = compress_topk(teacher_logits(NUM_SOURCE, 1).reshape(N * V, -1), 4, 1.0)
    at_one = TeacherOutputs(vals.reshape(N, V, 4), ids.reshape(N, V, 4), NUM_SOURCE, temperature=1.0)
    with pytest.raises(ValueError, match="temperature 1.0"):
        ProxyDistillTask(ProxyStudent(student(), NUM_SOURCE), at_one, tgt, WeightSchedule(), 4, proxy_temperature=2.0)


def reprogrammed_teacher(prompt: str = "padding") -> ReprogrammedTeacher:
    torch.manual_seed(0)
    teacher = create_model("resnet10t", 1000, input_size=16, zero_init_last=False)
    p = PaddingPrompt(16, teacher.preprocess, pad=2) if prompt == "padding" else FullImagePrompt(16, teacher.preprocess)
    return ReprogrammedTeacher(teacher, p, MappedHead([5, 900, 17], 1000))


def test_proxy_outputs_go_through_the_shared_cache_top_k_compressed(tmp_path):
    model, data = reprogrammed_teacher(), transfer(6)
    src, info = cached_teacher_outputs(model, data, 2, 0, tmp_path, batch_size=4, kind="source_logits",
                                       storage=Storage("topk", 16, 2.0))
    assert info["bytes_per_view"] == 64 and src.shape == (6, 2, 1000) and src.is_probabilities
    assert torch.allclose(src.dense().sum(-1), torch.ones(6, 2), atol=1e-2)
    tgt, _ = cached_teacher_outputs(model, data, 2, 0, tmp_path, batch_size=4, kind="target_logits")
    views = replay_views(torch.arange(6), torch.ones(6, dtype=torch.long), 0)
    with torch.no_grad():
        direct = model(data.images.tensor(), views)
    assert torch.allclose(tgt.dense()[:, 1], direct["target_logits"].half().float(), atol=1e-2)
    assert torch.allclose(direct["target_logits"], direct["source_logits"][:, [5, 900, 17]])
    again, hit = cached_teacher_outputs(model, data, 2, 0, tmp_path, batch_size=4, kind="target_logits")
    assert hit["hit"] and hit["teacher_images"] == 0
    # the prompt is part of the key: another prompt (or the same one trained) is another cache entry
    key = cache_key(model, data, 2, 0, "target_logits")
    assert cache_key(reprogrammed_teacher("full"), data, 2, 0, "target_logits") != key
    with torch.no_grad():
        model.prompt.top.add_(0.1)
    assert cache_key(model, data, 2, 0, "target_logits") != key
    with pytest.raises(ValueError, match="source_logits"):
        model.cache_outputs(data.images.tensor(), None, "logits")
