from pathlib import Path

import pytest
import torch
from PIL import Image

from taskdistill.data.sources import FASHION_MNIST_ROOT, load_dataset, load_fashion_mnist
from taskdistill.errors import DataError


def test_folder_dataset_loads_classes_sorted_and_resized(shapes_dataset):
    train, test = shapes_dataset
    data = load_dataset("folder", str(train), str(test), policy=24)
    assert data.class_names == ["bars", "circle", "cross"]
    assert data.train.images.shape == (90, 3, 24, 24) and data.train.images.dtype == torch.uint8
    assert torch.bincount(data.train.labels).tolist() == [30, 30, 30]
    assert len(data.test) == 30


def test_csv_manifest_with_relative_paths(shapes_dataset, tmp_path):
    train, test = shapes_dataset
    for split, root in (("train", train), ("test", test)):
        lines = ["path,label"] + [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in sorted(root.rglob("*.png"))]
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    data = load_dataset("csv", str(tmp_path / "train.csv"), str(tmp_path / "test.csv"), policy=16)
    assert data.class_names == ["bars", "circle", "cross"] and len(data.train) == 90


def truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def test_truncated_image_fails_naming_the_file_or_is_skipped_and_counted(shapes_dataset):
    train, test = shapes_dataset
    bad = train / "circle" / "003.png"
    truncate(bad)
    with pytest.raises(DataError, match=r"(?s)003\.png.*--on-bad-image skip"):
        load_dataset("folder", str(train), str(test), policy=16)
    data = load_dataset("folder", str(train), str(test), policy=16, on_bad_image="skip")
    assert data.train.skipped == [str(bad)]
    assert len(data.train) == 89


def test_unreadable_non_image_file(shapes_dataset):
    train, test = shapes_dataset
    (train / "bars" / "notes.png").write_text("this is not a picture")
    with pytest.raises(DataError, match=r"notes\.png"):
        load_dataset("folder", str(train), str(test), policy=16)


def test_empty_class_folder_and_missing_paths(shapes_dataset, tmp_path):
    train, test = shapes_dataset
    (train / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder '.*empty' holds no images"):
        load_dataset("folder", str(train), str(test), policy=16)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("folder", str(tmp_path / "nowhere"), str(test), policy=16)
    with pytest.raises(DataError, match="needs a test split"):
        load_dataset("folder", str(test), None, policy=16)


def test_test_split_with_unknown_class(shapes_dataset):
    train, test = shapes_dataset
    (test / "star").mkdir()
    Image.new("RGB", (8, 8)).save(test / "star" / "0.png")
    with pytest.raises(DataError, match=r"classes not in the training data: \['star'\]"):
        load_dataset("folder", str(train), str(test), policy=16)


def test_unknown_dataset_suggests():
    with pytest.raises(DataError, match="Did you mean 'fashion-mnist'"):
        load_dataset("fashion_mnist")


def test_fashion_mnist_missing_root_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path))


def test_packaged_fashion_mnist_is_real():
    data = load_fashion_mnist(FASHION_MNIST_ROOT)
    assert data.train.images.shape == (60000, 1, 28, 28)
    assert data.test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10


def test_three_bad_files_and_an_empty_class_are_reported_in_one_error(shapes_dataset):
    train, test = shapes_dataset
    for name in ("bars/001.png", "circle/002.png", "cross/003.png"):
        truncate(train / name)
    (train / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load_dataset("folder", str(train), str(test), policy=16)
    text = str(err.value)
    assert text.startswith("4 problem(s) in train folder")
    assert all(n in text for n in ("class folder", "empty' holds no images", "bars/001.png", "circle/002.png",
                                   "cross/003.png", "data.on_empty_class=skip", "--on-bad-image skip"))
    data = load_dataset("folder", str(train), str(test), policy=16, on_bad_image="skip", on_empty_class="skip")
    assert data.class_names == ["bars", "circle", "cross"] and len(data.train) == 87 and len(data.train.skipped) == 3


def test_a_folder_link_back_up_is_listed_once(shapes_dataset):
    train, test = shapes_dataset
    (train / "bars" / "up").symlink_to(train, target_is_directory=True)
    data = load_dataset("folder", str(train), str(test), policy=16)
    # bars/up leads to circle/ and cross/ (60 images, labelled bars) and back to bars/, already listed: no loop
    assert len(data.train) == 90 + 60
