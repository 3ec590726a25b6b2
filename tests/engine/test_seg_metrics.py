"""mIoU, per-class IoU and pixel accuracy from a confusion matrix, against a hand-computed case."""

import pytest
import torch

from taskdistill.engine.seg_metrics import confusion_matrix, segmentation_metrics


def test_hand_computed_case_with_ignore_and_an_absent_class():
    # classes 0, 1, 2, 3; class 3 is in neither labels nor predictions; 255 = ignore
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 0]])  # the ignored pixels' predictions never count
    cm = confusion_matrix(pred, target, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    m = segmentation_metrics(cm, ["a", "b", "c", "d"])
    # IoU_a = 1 / (2 + 2 - 1) = 1/3, IoU_b = 2 / (2 + 3 - 2) = 2/3, IoU_c = 1 / (2 + 1 - 1) = 1/2, d: none
    assert m["per_class_iou"]["a"] == pytest.approx(1 / 3)
    assert m["per_class_iou"]["b"] == pytest.approx(2 / 3)
    assert m["per_class_iou"]["c"] == pytest.approx(1 / 2)
    assert m["per_class_iou"]["d"] is None
    assert m["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert m["pixel_accuracy"] == pytest.approx(4 / 6) and m["num_pixels"] == 6
    assert m["mean_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)


def test_a_class_only_predicted_counts_with_iou_zero():
    cm = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), 2)
    m = segmentation_metrics(cm, ["x", "y"])
    assert m["per_class_iou"] == {"x": 0.5, "y": 0.0} and m["miou"] == pytest.approx(0.25)


def test_labels_outside_the_classes_are_an_error():
    with pytest.raises(ValueError, match=r"\[7\]"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 3)
