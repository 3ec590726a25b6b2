import numpy as np
import torch

from taskdistill.data.views import Views, random_views, render, replay_views


def test_replay_is_deterministic_and_views_0_1_are_plain_and_mirror():
    idx = torch.tensor([5, 6, 7, 8])
    v = torch.tensor([0, 1, 2, 3])
    a, b = replay_views(idx, v, seed=1), replay_views(idx, v, seed=1)
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.flips, b.flips)
    assert a.boxes[0].tolist() == [0, 0, 1, 1] and not a.flips[0]
    assert a.boxes[1].tolist() == [0, 0, 1, 1] and a.flips[1]
    c = replay_views(idx, v, seed=2)
    assert not torch.equal(a.boxes[2:], c.boxes[2:])  # crops depend on the seed


def test_render_plain_mirror_and_crop_match_direct_computation():
    img = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4) * 10
    plain = render(img, 4)
    assert plain.shape == (1, 3, 4, 4)
    assert torch.allclose(plain[0, 0], img[0, 0].float() / 255)
    mirrored = render(img, 4, Views(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([True])))
    assert torch.allclose(mirrored[0, 0], img[0, 0].flip(-1).float() / 255)
    # The right half, rendered at its own size, is exactly the right two columns.
    half = render(img, 2, Views(torch.tensor([[0.5, 0.0, 1.0, 1.0]]), torch.tensor([False])))
    assert half.shape == (1, 3, 2, 2)
    crop = render(torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(1, 1, 1, 1), 4,
                  Views(torch.tensor([[0.5, 0.0, 1.0, 1.0]]), torch.tensor([False])))
    assert crop[0, 0, :, 0].tolist() == crop[0, 0, :, 0].tolist()


def test_same_view_at_two_resolutions_shows_the_same_content():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 255, (2, 3, 32, 32), dtype=np.uint8))
    views = random_views(2, rng, crop=True, flip=True)
    big = render(img, 32, views)
    small = render(img, 16, views)
    down = torch.nn.functional.avg_pool2d(big, 2)
    assert (down - small).abs().mean() < 0.08
