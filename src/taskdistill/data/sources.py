"""Dataset specs: built-ins `fashion-mnist` and `clipart`, a folder of class subfolders, or a CSV manifest (path,label)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
import torch

from taskdistill.data.clipart import ensure_clipart
from taskdistill.data.decode import DecodePolicy, decode_array
from taskdistill.data.idx import read_idx
from taskdistill.data.image_set import ImageSet
from taskdistill.data.locations import IMAGE_SUFFIXES
from taskdistill.data.stored_sets import StoreOptions, load_image_files
from taskdistill.errors import DataError

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
BUILTINS = ("fashion-mnist", "clipart")
# The built-in's pixels as they ship: 28x28 grayscale. Checkpoints record it, so `predict` decodes a new image
# the same way (28 px, one channel) before resizing it to the model's input.
FASHION_MNIST_POLICY = DecodePolicy(size=28, resize="squash", color="gray", jpeg_draft=False)


@dataclass
class TaskData:
    """The labeled pool (`train`, labels known) and the held-out `test` split."""

    train: ImageSet
    test: ImageSet
    policy: DecodePolicy | None = None  # how files became these pixels

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names


def _find_idx(root: Path, stem: str) -> Path | None:
    for candidate in (root / f"{stem}.gz", root / stem, root / "FashionMNIST" / "raw" / stem):
        if candidate.is_file():
            return candidate
    return None


def load_fashion_mnist(root: str | None = None, download: bool = False) -> TaskData:
    """Fashion-MNIST from IDX files (Debian's `dataset-fashion-mnist` by default), images `[N, 1, 28, 28]`."""
    base = Path(root or FASHION_MNIST_ROOT)
    if download:  # the online path: torchvision fetches the same IDX files into `base`
        from torchvision.datasets import FashionMNIST

        for train in (True, False):
            FashionMNIST(str(base), train=train, download=True)
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img_path, lbl_path = _find_idx(base, f"{prefix}-images-idx3-ubyte"), _find_idx(base, f"{prefix}-labels-idx1-ubyte")
        if img_path is None or lbl_path is None:
            raise DataError(
                f"Fashion-MNIST {split} files not found under '{base}'. Install them with "
                f"`apt-get install dataset-fashion-mnist`, set data.root to a folder holding the IDX files, "
                f"or set data.download=true when online."
            )
        images, labels = read_idx(img_path), read_idx(lbl_path)
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"'{img_path}' has {images.shape[0]} images but '{lbl_path}' {labels.shape[0]} labels")
        splits[split] = ImageSet(
            images=torch.from_numpy(images.copy()).unsqueeze(1),
            labels=torch.from_numpy(labels.astype(np.int64)),
            ids=[f"fashion-mnist/{split}/{i}" for i in range(len(labels))],
            class_names=list(FASHION_MNIST_CLASSES),
            policy=FASHION_MNIST_POLICY,
        )
    return TaskData(train=splits["train"], test=splits["test"], policy=FASHION_MNIST_POLICY)


def decode_image(source: str | Path | IO[bytes], policy: DecodePolicy | int) -> torch.Tensor:
    """Decode one image file to uint8 `[C, S, S]` by `policy` (an int: the default policy at that size).
    Raises one of `DECODE_ERRORS` for an unreadable file."""
    pol = policy if isinstance(policy, DecodePolicy) else DecodePolicy(int(policy))
    return torch.from_numpy(decode_array(source, pol))


def image_files(folder: Path) -> list[str]:
    """Image files under `folder` (recursively, following links), in pathlib's order (by path components)."""
    found: list[tuple[list[str], str]] = []
    stack: list[tuple[str, list[str]]] = [(os.fspath(folder), [])]
    seen: set[tuple[int, int]] = set()  # folders by (device, inode): a link back up is not followed twice
    while stack:
        where, parts = stack.pop()
        st = os.stat(where)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(where) as entries:
            for e in entries:
                if e.is_dir():
                    stack.append((e.path, [*parts, e.name]))
                elif os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file():
                    found.append(([*parts, e.name], e.path))
    found.sort(key=lambda item: item[0])
    return [full for _, full in found]


def _scan_folder(root: Path) -> tuple[list[str], list[str], list[str], list[Path]]:
    """(image paths, their class names, class names in order, class folders that hold no image)."""
    if not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist or is not a folder")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"'{root}' has no class subfolders; expected {root}/<class name>/<image files>")
    paths: list[str] = []
    names: list[str] = []
    empty: list[Path] = []
    for d in class_dirs:
        files = image_files(d)
        if not files:
            empty.append(d)
        paths.extend(files)
        names.extend([d.name] * len(files))
    return paths, names, [d.name for d in class_dirs if d not in empty], empty


def _read_manifest(path: Path) -> tuple[list[Path], list[str]]:
    if not path.is_file():
        raise DataError(f"CSV manifest '{path}' does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise DataError(f"CSV manifest '{path}' needs a header with columns 'path,label', got {reader.fieldnames}")
        rows = list(reader)
    if not rows:
        raise DataError(f"CSV manifest '{path}' lists no images")
    paths, names = [], []
    for n, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            raise DataError(f"CSV manifest '{path}' line {n}: empty path or label")
        p = Path(row["path"])
        paths.append(p if p.is_absolute() else path.parent / p)
        names.append(row["label"])
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DataError(f"CSV manifest '{path}' names {len(missing)} missing file(s), first: '{missing[0]}'")
    return paths, names


def _label_ids(names: list[str], class_names: list[str], where: Path) -> list[int]:
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise DataError(f"'{where}' has classes not in the training data: {unknown[:5]}; the classes are {class_names}")
    return [index[n] for n in names]


def load_files(
    kind: Literal["folder", "csv"], root: str, test_root: str | None, policy: DecodePolicy | int,
    on_bad_image: Literal["fail", "skip"] = "fail", store: StoreOptions | None = None,
    on_empty_class: Literal["fail", "skip"] = "fail",
) -> TaskData:
    """A folder of class subfolders or a CSV manifest, for train and test, each decoded once into an image
    store (`store`) by `policy`; images `[N, C, S, S]` gathered from it. Empty class folders, missing and
    unreadable files of a split are reported together in one error (or skipped, by the two `on_*` rules)."""
    if test_root is None:
        raise DataError(f"dataset '{kind}' needs a test split: set data.test_root to a {kind} like data.root")
    pol = policy if isinstance(policy, DecodePolicy) else DecodePolicy(int(policy))
    sets = []
    class_names: list[str] = []
    for split, where in (("train", Path(root)), ("test", Path(test_root))):
        problems: list[str] = []
        if kind == "folder":
            paths, names, found, empty = _scan_folder(where)
            if empty and on_empty_class == "fail":
                problems = [f"  class folder '{d}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): add "
                            f"images, remove it, or set data.on_empty_class=skip" for d in empty]
        else:
            paths, names = _read_manifest(where)
            found = sorted(set(names))
        if split == "train":
            class_names = found
            if not class_names:
                raise DataError(f"no class folder of '{where}' holds images")
        labels = _label_ids(names, class_names, where)
        paths = [str(p) for p in paths]  # the ids too: stable names of the images
        sets.append(load_image_files(paths, labels, paths, class_names, pol, on_bad_image, store or StoreOptions(),
                                     f"{split} {kind} {where.resolve()}", problems=problems))
    return TaskData(train=sets[0], test=sets[1], policy=pol)


def load_dataset(
    dataset: str, root: str | None = None, test_root: str | None = None, policy: DecodePolicy | int = 224,
    on_bad_image: Literal["fail", "skip"] = "fail", download: bool = False, store: StoreOptions | None = None,
    on_empty_class: Literal["fail", "skip"] = "fail",
) -> TaskData:
    """Dispatch on the dataset spec name: a built-in name, "folder" or "csv"."""
    if dataset == "fashion-mnist":
        return load_fashion_mnist(root, download=download)
    if dataset == "clipart":  # built once from Debian packages into a folder dataset (data/clipart.py)
        built = ensure_clipart(root)
        return load_files("folder", str(built / "train"), str(built / "test"), policy, on_bad_image, store,
                          on_empty_class)
    if dataset in ("folder", "csv"):
        if root is None:
            raise DataError(f"dataset '{dataset}' needs data.root (the training {dataset}) and data.test_root")
        return load_files(dataset, root, test_root, policy, on_bad_image, store, on_empty_class)  # type: ignore[arg-type]
    import difflib

    close = difflib.get_close_matches(dataset, [*BUILTINS, "folder", "csv"], n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise DataError(f"unknown dataset '{dataset}'.{hint} Use one of: {', '.join([*BUILTINS, 'folder', 'csv'])}")
