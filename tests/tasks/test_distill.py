import pytest
import torch

from taskdistill.cache.teacher_outputs import TeacherOutputs
from taskdistill.data.views import model_input, replay_views
from taskdistill.losses.kd import kd_kl_loss, kd_kl_loss_from_probs
from taskdistill.models.registry import create_model
from taskdistill.tasks import DistillTask


def _batch(n=6):
    g = torch.Generator().manual_seed(0)
    return {"images": torch.randint(0, 255, (n, 1, 16, 16), dtype=torch.uint8, generator=g),
            "indices": torch.arange(n), "views": torch.tensor([0, 1] * (n // 2))}


def test_logit_and_topk_targets_give_their_own_kl():
    torch.manual_seed(0)
    student = create_model("resnet10t", 4, input_size=16).eval()
    logits = torch.randn(6, 2, 4)
    batch = _batch()
    x = model_input(batch["images"], student.preprocess, replay_views(batch["indices"], batch["views"], 0))
    with torch.no_grad():
        out = student(x)
        dense = DistillTask(student, logits, 2.0, view_seed=0)(batch)["loss"]
        assert dense.item() == pytest.approx(kd_kl_loss(out, logits[batch["indices"], batch["views"]], 2.0).item(),
                                             rel=1e-4)
        probs = torch.softmax(logits / 2.0, -1).numpy()
        stored = TeacherOutputs(probs[..., :2], torch.tensor([[[0, 1]] * 2] * 6).numpy(), 4, temperature=2.0)
        target = stored.gather(batch["indices"], batch["views"])
        got = DistillTask(student, stored, 2.0, view_seed=0)(batch)["loss"]
        assert got.item() == pytest.approx(kd_kl_loss_from_probs(out, target, 2.0).item(), rel=1e-4)
        assert got.item() != pytest.approx(dense.item(), rel=1e-3)  # the tail is spread, not the teacher's


def test_topk_targets_at_another_temperature_are_refused():
    student = create_model("resnet10t", 4, input_size=16)
    stored = TeacherOutputs(torch.rand(6, 1, 2).numpy(), torch.zeros(6, 1, 2, dtype=torch.int16).numpy(), 4,
                            temperature=4.0)
    with pytest.raises(ValueError, match="temperature 4.0"):
        DistillTask(student, stored, 2.0, view_seed=0)
