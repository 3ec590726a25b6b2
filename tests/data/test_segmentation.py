"""The segmentation folder spec: masks with an ignore index, bad masks named, few-shot by image count."""

import numpy as np
import pytest
import torch
from PIL import Image

from taskdistill.data.segmentation import (
    SegmentationSet,
    few_shot_images,
    load_seg_folder,
    load_seg_folders,
    mask_image,
    read_mask,
    write_seg_folder,
)
from taskdistill.errors import DataError

CLASSES = ["background", "square", "disc"]


def make_split(root, n=4, size=8, seed=0):
    """n RGB images with L-mode masks; the top-left 2x2 block of every mask is ignore (255)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    masks = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        m = rng.integers(0, 3, (size, size)).astype(np.uint8)
        m[:2, :2] = 255
        Image.fromarray(m).save(root / "masks" / f"im{i}.png")
        masks.append(m)
    return np.stack(masks)


def test_masks_load_with_their_ignore_pixels(tmp_path):
    masks = make_split(tmp_path / "train")
    data = load_seg_folder(tmp_path / "train", size=8)
    assert data.class_names == CLASSES and data.ignore_index == 255 and len(data) == 4
    assert data.images.shape == (4, 3, 8, 8) and data.masks.dtype == torch.uint8
    assert np.array_equal(data.masks.numpy(), masks)  # class indices and 255 kept exactly
    assert (data.masks[:, :2, :2] == 255).all()


def test_masks_resize_with_nearest_neighbour_never_blending_indices(tmp_path):
    make_split(tmp_path / "train", size=8)
    data = load_seg_folder(tmp_path / "train", size=16)
    assert data.masks.shape == (4, 16, 16)
    assert set(torch.unique(data.masks).tolist()) <= {0, 1, 2, 255}
    assert (data.masks[:, :4, :4] == 255).all()  # the 2x2 ignore block became 4x4


def test_palette_png_masks_read_back_as_indices(tmp_path):
    m = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    mask_image(m, 3).save(tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P"
        assert im.convert("RGB").getpixel((1, 1)) == (255, 255, 255)  # ignore drawn white
    assert np.array_equal(read_mask(tmp_path / "m.png", None, 3).numpy(), m)


def test_a_value_that_is_no_class_is_an_error_naming_the_file(tmp_path):
    Image.fromarray(np.array([[0, 7]], dtype=np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"bad\.png.*\[7\].*classes\.txt"):
        read_mask(tmp_path / "bad.png", None, num_classes=3)
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="single-channel"):
        read_mask(tmp_path / "rgb.png", None, num_classes=3)


def test_folder_errors_name_the_fix(tmp_path):
    make_split(tmp_path / "train")
    (tmp_path / "train" / "masks" / "im1.png").unlink()
    with pytest.raises(DataError, match="no mask.*im1"):
        load_seg_folder(tmp_path / "train", 8)
    make_split(tmp_path / "test")
    (tmp_path / "test" / "classes.txt").write_text("background\ndisc\nsquare\n")
    (tmp_path / "train" / "masks" / "im1.png").write_bytes((tmp_path / "test" / "masks" / "im1.png").read_bytes())
    with pytest.raises(DataError, match="same classes"):
        load_seg_folders(str(tmp_path / "train"), str(tmp_path / "test"), 8)
    with pytest.raises(DataError, match="data.test_root"):
        load_seg_folders(str(tmp_path / "train"), None, 8)


def test_written_folder_loads_back_identically(tmp_path):
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 3, (3, 6, 6), generator=g).to(torch.uint8)
    masks[0, 0] = 255
    data = SegmentationSet(torch.randint(0, 256, (3, 3, 6, 6), generator=g, dtype=torch.uint8), masks,
                           ["a", "b", "c"], CLASSES)
    back = load_seg_folder(write_seg_folder(data, tmp_path / "out"), size=6)
    assert torch.equal(back.images, data.images) and torch.equal(back.masks, data.masks)
    assert back.class_names == CLASSES


def test_few_shot_by_image_count_is_seeded_and_disjoint():
    a, b = few_shot_images(50, 10, seed=3, val_count=2), few_shot_images(50, 10, seed=3, val_count=2)
    assert torch.equal(a.labeled, b.labeled) and torch.equal(a.val, b.val)
    assert len(a.labeled) == 8 and len(a.val) == 2 and len(a.unlabeled) == 40
    everything = torch.cat([a.labeled, a.val, a.unlabeled])
    assert torch.equal(torch.sort(everything).values, torch.arange(50))
    assert not torch.equal(few_shot_images(50, 10, seed=4).labeled, few_shot_images(50, 10, seed=3).labeled)
    with pytest.raises(DataError, match="more images than the training pool"):
        few_shot_images(5, 6, seed=0)


def test_unlabeled_view_keeps_images_and_drops_masks(tmp_path):
    make_split(tmp_path / "train")
    data = load_seg_folder(tmp_path / "train", 8)
    view = data.unlabeled(torch.tensor([1, 3]))
    assert torch.equal(view.images.tensor(), data.images[[1, 3]]) and (view.labels == -1).all()
    assert view.ids == [data.ids[1], data.ids[3]] and view.class_names == CLASSES
