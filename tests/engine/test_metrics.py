import pytest
import torch

from taskdistill.engine.evaluate import classification_metrics


def test_metrics_against_hand_computed_case():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 1, 1, 0, 2])
    logits = torch.nn.functional.one_hot(preds, 3).float()
    m = classification_metrics(logits, labels, ["a", "b", "c"])
    assert m["top1"] == pytest.approx(4 / 6)
    assert abs(m["macro_accuracy"] - (2 / 3 + 1 / 2 + 1) / 3) < 1e-6
    assert m["per_class_accuracy"] == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 1.0})
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
