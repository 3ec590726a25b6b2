import pytest
import torch

from taskdistill.data.splits import few_shot_split
from taskdistill.errors import DataError

NAMES = ["a", "b", "c"]


def labels(counts=(20, 15, 8)):
    return torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])[torch.randperm(sum(counts),
                                                                                         generator=torch.Generator().manual_seed(0))]


def test_k_per_class_is_exact_disjoint_and_covers_the_pool():
    y = labels()
    s = few_shot_split(y, NAMES, seed=0, labels_per_class=5, val_per_class=1)
    assert torch.bincount(y[s.labeled], minlength=3).tolist() == [4, 4, 4]
    assert torch.bincount(y[s.val], minlength=3).tolist() == [1, 1, 1]
    everything = torch.cat([s.labeled, s.val, s.unlabeled])
    assert sorted(everything.tolist()) == list(range(len(y)))


def test_same_seed_same_split_other_seed_other_split():
    y = labels()
    a = few_shot_split(y, NAMES, seed=3, labels_per_class=4)
    b = few_shot_split(y, NAMES, seed=3, labels_per_class=4)
    c = few_shot_split(y, NAMES, seed=4, labels_per_class=4)
    assert torch.equal(a.labeled, b.labeled)
    assert not torch.equal(a.labeled, c.labeled)


def test_max_per_class_and_fraction():
    y = labels()
    s = few_shot_split(y, NAMES, seed=0, max_per_class=10)
    assert torch.bincount(y[s.labeled], minlength=3).tolist() == [10, 10, 8]
    f = few_shot_split(y, NAMES, seed=0, label_fraction=0.25)
    assert torch.bincount(y[f.labeled], minlength=3).tolist() == [5, 4, 2]


def test_budget_larger_than_a_class_names_the_class_and_the_fix():
    with pytest.raises(DataError, match=r"class 'c' has 8 labeled image\(s\), fewer than data.labels_per_class=9.*max_per_class"):
        few_shot_split(labels(), NAMES, seed=0, labels_per_class=9)


def test_budget_rules_are_exclusive_and_checked():
    with pytest.raises(DataError, match="exactly one label budget"):
        few_shot_split(labels(), NAMES, seed=0, labels_per_class=2, max_per_class=3)
    with pytest.raises(DataError, match="labels_per_class must be >= 1"):
        few_shot_split(labels(), NAMES, seed=0, labels_per_class=0)
    with pytest.raises(DataError, match="leaves no training labels"):
        few_shot_split(labels(), NAMES, seed=0, labels_per_class=2, val_per_class=2)
