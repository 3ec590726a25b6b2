import math

import pytest
import torch

from taskdistill.losses.feature import contrastive_feature_loss, cosine_feature_loss


def test_cosine_matches_hand_computed_formula():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 3.0], [2.0, 2.0]])
    # row 0: orthogonal -> 1 - 0; row 1: parallel -> 1 - 1
    assert cosine_feature_loss(s, t).item() == pytest.approx(0.5, abs=1e-6)
    s2 = torch.tensor([[1.0, 0.0]])
    t2 = torch.tensor([[1.0, 1.0]])
    assert cosine_feature_loss(s2, t2).item() == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-6)


def test_cosine_is_scale_free_and_zero_on_equal_rows():
    x = torch.randn(6, 5)
    assert cosine_feature_loss(x, x * 7.0).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_feature_loss(x, -x).item() == pytest.approx(2.0, abs=1e-6)


def test_contrastive_matches_hand_computed_formula():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    temp = 0.5
    c = 1 / math.sqrt(2)
    sims = [[1.0, c], [0.0, c]]  # cos(s_i, t_j)
    expected = 0.0
    for i in range(2):
        logits = [v / temp for v in sims[i]]
        expected += -logits[i] + math.log(sum(math.exp(v) for v in logits))
    expected /= 2
    assert contrastive_feature_loss(s, t, temp).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_is_log_b_when_uninformative():
    s = torch.ones(4, 3)
    t = torch.ones(4, 3)
    assert contrastive_feature_loss(s, t, 0.1).item() == pytest.approx(math.log(4), rel=1e-5)


def test_contrastive_lower_when_aligned_than_shuffled():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(16, 32, generator=g)
    s = t + 0.1 * torch.randn(16, 32, generator=g)
    shuffled = s[torch.roll(torch.arange(16), 1)]
    aligned = contrastive_feature_loss(s, t, 0.1).item()
    assert aligned < 0.1
    assert aligned < contrastive_feature_loss(shuffled, t, 0.1).item() - 1.0


def test_losses_backpropagate_into_student_only_input():
    s = torch.randn(5, 4, requires_grad=True)
    t = torch.randn(5, 4)
    (cosine_feature_loss(s, t) + contrastive_feature_loss(s, t)).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("loss", [cosine_feature_loss, contrastive_feature_loss])
def test_shape_mismatch_is_an_error(loss):
    with pytest.raises(ValueError):
        loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError):
        loss(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError):
        loss(torch.randn(2, 3, 1), torch.randn(2, 3, 1))


def test_contrastive_rejects_non_positive_temperature():
    with pytest.raises(ValueError):
        contrastive_feature_loss(torch.randn(2, 3), torch.randn(2, 3), 0.0)
