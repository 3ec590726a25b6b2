import pytest
import torch
import torch.nn.functional as F

from taskdistill.data.views import model_input, replay_views
from taskdistill.models.registry import create_model
from taskdistill.tasks.distill import DistillTask
from taskdistill.tasks.pseudo_label import PseudoLabelTask


def test_pseudo_labels_are_the_teachers_argmax_learned_with_cross_entropy():
    torch.manual_seed(0)
    student = create_model("resnet10t", 4, input_size=16).eval()
    logits = torch.randn(6, 2, 4)
    g = torch.Generator().manual_seed(0)
    batch = {"images": torch.randint(0, 255, (6, 1, 16, 16), dtype=torch.uint8, generator=g),
             "indices": torch.arange(6), "views": torch.tensor([0, 1] * 3)}
    x = model_input(batch["images"], student.preprocess, replay_views(batch["indices"], batch["views"], 0))
    with torch.no_grad():
        out = student(x)
        hard = logits[batch["indices"], batch["views"]].argmax(1)
        got = PseudoLabelTask(student, logits, 2.0, view_seed=0)(batch)
        assert got["loss"].item() == pytest.approx(F.cross_entropy(out, hard).item(), rel=1e-4)
        # the same teacher outputs distilled softly give another loss: the two methods differ only there
        soft = DistillTask(student, logits, 2.0, view_seed=0)(batch)["loss"]
        assert soft.item() != pytest.approx(got["loss"].item(), rel=1e-3)
