"""The built-in fashion-composite task: reproducible per seed, labels agree with the pixels."""

import numpy as np
import torch

from taskdistill.data.composite import (
    CompositeSpec,
    class_names,
    draw_canvases,
    label_map,
    load_fashion_composite,
)

SMALL = CompositeSpec(train_images=12, test_images=6, canvas_size=32)


def test_same_seed_same_canvases_other_seed_other_canvases(tmp_path):
    a, b = load_fashion_composite(SMALL), load_fashion_composite(SMALL)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.masks, b.test.masks)
    c = load_fashion_composite(CompositeSpec(train_images=12, test_images=6, canvas_size=32, seed=1))
    assert not torch.equal(a.test.images, c.test.images)
    assert a.train.images.shape == (12, 3, 32, 32) and a.test.masks.shape == (6, 32, 32)
    assert a.train.class_names == class_names("groups") and len(a.train.class_names) == 6
    fine = load_fashion_composite(CompositeSpec(train_images=12, test_images=6, canvas_size=32, classes="garments"))
    assert len(fine.train.class_names) == 11 and int(fine.train.masks.max()) <= 10
    assert torch.equal(fine.train.masks > 0, a.train.masks > 0)  # the same canvases, finer labels


def test_disk_cache_returns_the_same_canvases(tmp_path):
    fresh = load_fashion_composite(SMALL, cache_dir=tmp_path)
    (folder,) = list((tmp_path / "composite").iterdir())
    assert (folder / "done.json").is_file()
    cached = load_fashion_composite(SMALL, cache_dir=tmp_path)
    assert torch.equal(cached.train.images, fresh.train.images) and torch.equal(cached.test.masks, fresh.test.masks)
    assert cached.test.ids == fresh.test.ids


def test_labels_mark_exactly_the_pasted_item_pixels():
    # one all-white item of class 3 (dress): its mask is one rectangle, drawn in one flat colour
    items = np.full((1, 28, 28), 255, dtype=np.uint8)
    spec = CompositeSpec(canvas_size=32, min_items=1, max_items=1, min_scale=0.5, max_scale=0.5)
    images, masks = draw_canvases(items, np.array([3]), 4, spec, np.random.default_rng(0))
    for img, m in zip(images, masks, strict=True):
        label = int(label_map(spec.classes)[3])
        fg = m == label
        assert fg.any() and set(torch.unique(m).tolist()) == {0, label}
        ys, xs = torch.nonzero(fg, as_tuple=True)
        assert int(fg.sum()) == (int(ys.max() - ys.min()) + 1) * (int(xs.max() - xs.min()) + 1)  # a rectangle
        colours = img.permute(1, 2, 0)[fg]
        assert (colours == colours[0]).all()


def test_groups_merge_the_garments():
    names = class_names("groups")
    assert names == ["background", "top", "trouser", "dress", "footwear", "bag"]
    m = label_map("groups")
    assert m[0] == m[2] == m[4] == m[6] == 1 and m[5] == m[7] == m[9] == 4 and m[8] == 5
