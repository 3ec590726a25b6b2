import math

import pytest
import torch

from taskdistill.losses.kd import kd_kl_loss


def test_matches_hand_computed_formula():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[0.0, 2.0, 0.0]])
    temp = 2.0
    p = torch.softmax(t / temp, 1)[0].tolist()
    q = torch.softmax(s / temp, 1)[0].tolist()
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True)) * temp**2
    assert kd_kl_loss(s, t, temp).item() == pytest.approx(expected, rel=1e-6)


def test_zero_when_equal_and_positive_otherwise():
    x = torch.randn(8, 5)
    assert kd_kl_loss(x, x, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_kl_loss(x, torch.randn(8, 5), 3.0).item() > 0


def test_per_pixel_equals_flattened_per_sample():
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    flat = kd_kl_loss(s.permute(0, 2, 3, 1).reshape(-1, 4), t.permute(0, 2, 3, 1).reshape(-1, 4), 2.0)
    assert kd_kl_loss(s, t, 2.0).item() == pytest.approx(flat.item(), rel=1e-5)


def test_gradient_matches_closed_form():
    s = torch.randn(4, 6, requires_grad=True)
    t = torch.randn(4, 6)
    temp = 4.0
    kd_kl_loss(s, t, temp).backward()
    expected = (torch.softmax(s / temp, 1) - torch.softmax(t / temp, 1)) * temp / 4
    assert torch.allclose(s.grad, expected.detach(), atol=1e-6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        kd_kl_loss(torch.randn(2, 3), torch.randn(2, 4), 1.0)


def test_from_probs_equals_logit_form_and_handles_zero_probabilities():
    from taskdistill.losses.kd import kd_kl_loss_from_probs

    s, t = torch.randn(6, 7), torch.randn(6, 7)
    p = torch.softmax(t / 3.0, 1)
    assert kd_kl_loss_from_probs(s, p, 3.0).item() == pytest.approx(kd_kl_loss(s, t, 3.0).item(), rel=1e-5)
    one_hot = torch.zeros(6, 7).scatter_(1, torch.zeros(6, 1, dtype=torch.long), 1.0)
    expected = -torch.log_softmax(s / 2.0, 1)[:, 0].mean() * 4.0  # KL to a one-hot = cross-entropy
    assert kd_kl_loss_from_probs(s, one_hot, 2.0).item() == pytest.approx(expected.item(), rel=1e-5)
