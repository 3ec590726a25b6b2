"""ImageRows: batches gathered by index from memory or a store file, selections without copies, fingerprints."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from taskdistill.data.image_rows import FileArray, ImageRows
from taskdistill.data.image_set import ImageSet


def pixels(n: int = 10) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 4, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def file_rows(tmp_path, t: torch.Tensor) -> ImageRows:
    path = tmp_path / "pixels.npy"
    np.save(path, t.numpy())
    offset = path.stat().st_size - t.numel()
    return ImageRows(FileArray(path, offset, tuple(t.shape), key="k"))


@pytest.mark.parametrize("backing", ["memory", "file"])
def test_indexing_matches_a_tensor(tmp_path, backing):
    t = pixels()
    rows = ImageRows(t) if backing == "memory" else file_rows(tmp_path, t)
    assert rows.shape == t.shape and len(rows) == 10 and rows.dtype == torch.uint8
    for key in (torch.tensor([3, 1, 2, 3]), [0, 9], slice(2, 8, 3), np.array([5, 6, 7, 8]), torch.tensor([-1])):
        assert torch.equal(rows[key], t[torch.as_tensor(np.arange(10)[key] if isinstance(key, slice) else key)])
    assert torch.equal(rows[4], t[4]) and torch.equal(rows.tensor(), t)
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[2, 5]] = True
    assert torch.equal(rows[mask], t[mask])
    with pytest.raises(IndexError):
        rows[torch.tensor([10])]


@pytest.mark.parametrize("backing", ["memory", "file"])
def test_selections_compose_without_reading(tmp_path, backing):
    t = pixels()
    rows = ImageRows(t) if backing == "memory" else file_rows(tmp_path, t)
    sub = rows.select(torch.tensor([8, 6, 4, 2])).select([1, 3])
    assert sub.index.tolist() == [6, 2] and sub.array is rows.array
    assert torch.equal(sub[:], t[[6, 2]])


def test_file_array_pickles_without_its_descriptor(tmp_path):
    t = pixels()
    rows = file_rows(tmp_path, t)
    rows[[0]]  # opens the file in this process
    back = pickle.loads(pickle.dumps(rows))
    assert back.array._fd is None and torch.equal(back[[1, 2]], t[[1, 2]])


def test_fingerprint_follows_content_and_order(tmp_path):
    t = pixels()
    a = ImageRows(t)
    assert a.fingerprint() == ImageRows(t.clone()).fingerprint()
    assert a.select([1, 0]).fingerprint() != a.select([0, 1]).fingerprint()
    u = t.clone()
    u[3, 0, 0, 0] ^= 1
    assert ImageRows(u).fingerprint() != a.fingerprint()
    f = file_rows(tmp_path, t)
    assert f.fingerprint() != ImageRows(FileArray(f.array.path, f.array.offset, f.array.shape, "other")).fingerprint()


def test_image_set_subset_shares_pixels_and_content_hash_needs_no_reads(tmp_path):
    t = pixels()
    s = ImageSet(file_rows(tmp_path, t), torch.arange(10), [str(i) for i in range(10)], ["a"])
    sub = s.subset([7, 3], drop_labels=True)
    assert sub.images.array is s.images.array and sub.labels.tolist() == [-1, -1] and sub.ids == ["7", "3"]
    (tmp_path / "pixels.npy").unlink()  # the hash of a store-backed set is computed from its key alone
    assert sub.content_hash() != s.subset([3, 7]).content_hash()
