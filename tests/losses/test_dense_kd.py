"""Per-pixel KD against its formula, ignore pixels left out; per-pixel CE with an ignore index."""

import math

import pytest
import torch
import torch.nn.functional as F

from taskdistill.losses.dense_kd import dense_cosine_loss, dense_kd_loss, seg_cross_entropy


def kl_by_hand(s, t, temp, keep):
    """mean over kept pixels of sum_k p_k log(p_k / q_k) * T^2, one pixel at a time in plain Python."""
    total, count = 0.0, 0
    b, k, h, w = s.shape
    for i in range(b):
        for y in range(h):
            for x in range(w):
                if not keep[i][y][x]:
                    continue
                zs = [s[i, c, y, x].item() / temp for c in range(k)]
                zt = [t[i, c, y, x].item() / temp for c in range(k)]
                ls = math.log(sum(math.exp(z) for z in zs))
                lt = math.log(sum(math.exp(z) for z in zt))
                total += sum(math.exp(zt[c] - lt) * ((zt[c] - lt) - (zs[c] - ls)) for c in range(k))
                count += 1
    return total / count * temp**2


def test_matches_the_formula_with_and_without_a_valid_mask():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 4, 3, 5, generator=g), torch.randn(2, 4, 3, 5, generator=g) * 2
    everywhere = [[[True] * 5 for _ in range(3)] for _ in range(2)]
    assert dense_kd_loss(s, t, 2.0).item() == pytest.approx(kl_by_hand(s, t, 2.0, everywhere), rel=1e-5)
    valid = torch.rand(2, 3, 5, generator=g) > 0.4
    expected = kl_by_hand(s, t, 3.0, valid.tolist())
    assert dense_kd_loss(s, t, 3.0, valid).item() == pytest.approx(expected, rel=1e-5)


def test_ignored_pixels_get_no_gradient_and_equal_outputs_give_zero():
    s = torch.randn(1, 3, 2, 2, requires_grad=True)
    t = torch.randn(1, 3, 2, 2)
    valid = torch.tensor([[[True, False], [False, True]]])
    dense_kd_loss(s, t, 2.0, valid).backward()
    assert (s.grad[0, :, 0, 1] == 0).all() and (s.grad[0, :, 1, 0] == 0).all() and s.grad[0, :, 0, 0].abs().sum() > 0
    x = torch.randn(2, 5, 4, 4)
    assert dense_kd_loss(x, x, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="resize_logits"):
        dense_kd_loss(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 2, 2), 2.0)


def test_cross_entropy_leaves_out_the_ignore_index():
    logits = torch.randn(2, 3, 2, 2)
    masks = torch.tensor([[[0, 1], [255, 2]], [[255, 255], [1, 0]]], dtype=torch.uint8)
    keep = masks != 255
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], masks[keep].long())
    assert seg_cross_entropy(logits, masks).item() == pytest.approx(expected.item(), rel=1e-6)
    all_ignored = torch.full((2, 2, 2), 255, dtype=torch.uint8)
    z = torch.randn(2, 3, 2, 2, requires_grad=True)
    loss = seg_cross_entropy(z, all_ignored)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()


def test_dense_cosine_is_zero_for_aligned_features_and_scale_free():
    f = torch.randn(2, 8, 3, 3)
    assert dense_cosine_loss(3 * f, f).item() == pytest.approx(0.0, abs=1e-6)
    assert dense_cosine_loss(-f, f).item() == pytest.approx(2.0, abs=1e-6)
