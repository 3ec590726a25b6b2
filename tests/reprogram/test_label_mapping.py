import pytest
import torch

from taskdistill.reprogram.label_mapping import (
    LinearLabelMap,
    MappedHead,
    frequency_label_mapping,
    iterative_label_mapping,
)


def peaked(top: list[int], num_source: int, second: list[int] | None = None) -> torch.Tensor:
    """One probability row per entry of `top`: 0.7 on top[i], 0.2 on second[i] (if given), rest uniform."""
    probs = torch.full((len(top), num_source), 0.0)
    for i, s in enumerate(top):
        rest = 0.3 if second is None else 0.1
        probs[i] = rest / (num_source - 1 - (second is not None))
        probs[i, s] = 0.7
        if second is not None:
            probs[i, second[i]] = 0.2
    return probs


def test_flm_resolves_a_conflict_greedily_and_is_one_to_one():
    # target 0: 5 images predicted as source 7
    # target 1: 3 images predicted as 7, 2 as 2  -> wants 7 too, but 5 > 3: 7 goes to target 0, 1 gets 2
    # target 2: 3 images predicted as 4, 1 as 2  -> (2, 4) = 3 is taken before (1, 2) = 2
    top = [7] * 5 + [7] * 3 + [2] * 2 + [4] * 3 + [2]
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 4)
    probs = peaked(top, 10)
    mapping = frequency_label_mapping(probs, labels, 3)
    assert mapping.dtype == torch.long
    assert mapping.tolist() == [7, 2, 4]
    naive = [int(probs[labels == t].argmax(1).mode().values) for t in range(3)]
    assert naive == [7, 7, 4]  # per-class argmax alone would map two targets to one source


def test_flm_breaks_count_ties_by_probability_mass():
    # every image's top class is 0; target 0 has more of them and takes it. Target 1 has zero counts
    # everywhere else, so its summed probability decides: its second choice is source 3.
    top = [0, 0, 0, 0, 0]
    second = [1, 1, 1, 3, 3]
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert frequency_label_mapping(peaked(top, 4, second), labels, 2).tolist() == [0, 3]


def test_flm_is_one_to_one_on_random_data_and_covers_targets_without_images():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(40, 50, generator=g).softmax(1)
    labels = torch.randint(0, 9, (40,), generator=g)  # target 9 has no images
    mapping = frequency_label_mapping(probs, labels, 10)
    assert mapping.shape == (10,) and len(set(mapping.tolist())) == 10
    assert int(mapping.min()) >= 0 and int(mapping.max()) < 50


def test_flm_rejects_impossible_requests():
    with pytest.raises(ValueError):
        frequency_label_mapping(torch.rand(4, 3), torch.tensor([0, 1, 2, 3]), 4)  # 4 targets, 3 sources
    with pytest.raises(ValueError):
        frequency_label_mapping(torch.rand(4, 5), torch.tensor([0, 1, 2, 3]), 3)  # label out of range
    with pytest.raises(ValueError):
        frequency_label_mapping(torch.rand(4, 5), torch.tensor([0, 1]), 3)


def test_mapped_head_selects_columns():
    logits = torch.arange(12.0).view(2, 6)
    head = MappedHead([3, 0, 5], num_source=6)
    assert head.num_target == 3 and not list(head.parameters())
    assert torch.equal(head(logits), torch.tensor([[3.0, 0.0, 5.0], [9.0, 6.0, 11.0]]))
    assert "mapping" in head.state_dict()
    head.set_mapping(torch.tensor([1, 2]))
    assert torch.equal(head(logits), logits[:, [1, 2]])
    with pytest.raises(ValueError):
        MappedHead([0, 6], num_source=6)


def test_linear_label_map_can_start_as_the_fixed_map():
    logits = torch.randn(4, 6)
    lin = LinearLabelMap(6, 3, init_mapping=[3, 0, 5])
    assert torch.allclose(lin(logits), MappedHead([3, 0, 5])(logits))
    assert LinearLabelMap(6, 3)(logits).shape == (4, 3)
    with pytest.raises(ValueError):
        LinearLabelMap(6, 3, init_mapping=[3, 0])


def test_iterative_label_mapping_recomputes_and_updates_the_head():
    labels = torch.tensor([0, 0, 1, 1])
    current = {"top": [1, 1, 2, 2]}
    head = MappedHead([0, 3])
    mapping = iterative_label_mapping(lambda: peaked(current["top"], 5), labels, 2, head)
    assert mapping.tolist() == [1, 2] and head.mapping.tolist() == [1, 2]
    current["top"] = [4, 4, 0, 0]  # the prompt moved: the next update follows it
    iterative_label_mapping(lambda: peaked(current["top"], 5), labels, 2, head)
    assert head.mapping.tolist() == [4, 0]
