"""Dense teacher outputs go through the content-keyed cache unchanged: one flat row per (image, view)."""

import torch

from taskdistill.cache.dense_outputs import DenseOutputs, cached_dense_outputs
from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import model_input, replay_views
from taskdistill.models.registry import create_model


def tiny_set(n=6) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8, generator=g), torch.full((n,), -1),
                    [f"x/{i}" for i in range(n)], ["a", "b", "c"])


def seg_teacher():
    torch.manual_seed(0)
    return create_model("seg:resnet10t", 3, input_size=16, head_width=8).eval()


def test_cached_logits_are_the_heads_own_grid_for_each_view(tmp_path):
    teacher, data = seg_teacher(), tiny_set()
    out, info = cached_dense_outputs(teacher, data, num_views=2, view_seed=0, cache_dir=tmp_path, batch_size=4)
    assert info["grid"] == [3, 4, 4] and not info["hit"] and info["teacher_images"] == 12
    idx, views = torch.tensor([1, 4]), torch.tensor([1, 0])
    x = model_input(data.images[idx], teacher.preprocess, replay_views(idx, views, 0))
    with torch.no_grad():
        expected = teacher.forward_head(teacher.forward_features(x))
    assert torch.allclose(out.gather(idx, views), expected, atol=2e-2)  # stored as float16
    again, info2 = cached_dense_outputs(teacher, data, num_views=2, view_seed=0, cache_dir=tmp_path, batch_size=4)
    assert info2["hit"] and info2["teacher_images"] == 0 and info2["key"] == info["key"]


def test_reduced_grid_and_features_get_their_own_keys(tmp_path):
    teacher, data = seg_teacher(), tiny_set()
    _, full = cached_dense_outputs(teacher, data, 1, 0, tmp_path)
    small, info = cached_dense_outputs(teacher, data, 1, 0, tmp_path, grid_size=2)
    feats, finfo = cached_dense_outputs(teacher, data, 1, 0, tmp_path, kind="dense-features", level=-1)
    assert len({full["key"], info["key"], finfo["key"]}) == 3
    assert small.grid == (3, 2, 2) and feats.grid == (512, 1, 1)
    assert info["bytes_per_view"] == 3 * 2 * 2 * 2  # float16


def test_in_memory_tensors_wrap_as_dense_outputs():
    x = torch.randn(5, 2, 3, 4, 4)
    wrapped = DenseOutputs.wrap(x)
    assert wrapped.grid == (3, 4, 4) and wrapped.num_views == 2
    assert torch.equal(wrapped.gather(torch.tensor([3]), torch.tensor([1])), x[3:4, 1])
