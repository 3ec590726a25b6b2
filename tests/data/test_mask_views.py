"""Masks follow their images through the same views, and are never blended."""

import torch

from taskdistill.data.mask_views import render_masks
from taskdistill.data.views import Views, render


def test_full_frame_flip_and_resize():
    m = torch.arange(16, dtype=torch.uint8).view(1, 4, 4)
    views = Views(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([True]))
    assert torch.equal(render_masks(m, 4, views), m.flip(-1))
    up = render_masks(m, 8)
    assert torch.equal(up, m.repeat_interleave(2, 1).repeat_interleave(2, 2))


def test_a_crop_lands_where_the_image_crop_does():
    # the image's red channel holds the mask value: after the same crop (and flip), they still agree
    g = torch.Generator().manual_seed(0)
    m = torch.randint(0, 5, (2, 8, 8), generator=g).to(torch.uint8)
    img = torch.stack([m * 50, torch.zeros_like(m), torch.zeros_like(m)], 1)
    views = Views(torch.tensor([[0.0, 0.5, 0.5, 1.0], [0.25, 0.25, 0.75, 0.75]]), torch.tensor([False, True]))
    out = render_masks(m, 4, views)
    assert torch.equal(out[0], m[0, 4:, :4]) and torch.equal(out[1], m[1, 2:6, 2:6].flip(-1))
    red = render(img, 4, views)[:, 0] * 255 / 50
    assert torch.allclose(red, out.float(), atol=1e-3)
    assert set(torch.unique(render_masks(m, 5, views)).tolist()) <= set(range(5))  # never an in-between value
