import torch
import torch.nn.functional as F

from taskdistill.cache.teacher_outputs import cache_key, cached_teacher_logits, compute_teacher_logits
from taskdistill.data.image_set import ImageSet
from taskdistill.models.registry import create_model


def tiny_set(n=12, seed=0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(images=torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
                    labels=torch.full((n,), -1), ids=[f"x/{i}" for i in range(n)], class_names=["a", "b", "c"])


def teacher(seed=0, size=16):
    torch.manual_seed(seed)
    return create_model("resnet10t", 3, input_size=size).eval()


class Counting:
    """Wraps a model and counts the images it sees."""

    def __init__(self, model):
        self.model, self.seen = model, 0
        self.preprocess, self.spec = model.preprocess, model.spec

    def eval(self):
        self.model.eval()
        return self

    def state_dict(self):
        return self.model.state_dict()

    def __call__(self, x):
        self.seen += len(x)
        return self.model(x)


def test_hit_after_miss_returns_same_values_without_running_the_teacher(tmp_path):
    data, t = tiny_set(), Counting(teacher())
    first, info1 = cached_teacher_logits(t, data, 2, view_seed=0, cache_dir=tmp_path, batch_size=5)
    assert not info1["hit"] and t.seen == 24 and first.shape == (12, 2, 3)
    second, info2 = cached_teacher_logits(t, data, 2, view_seed=0, cache_dir=tmp_path, batch_size=5)
    assert info2["hit"] and t.seen == 24
    assert torch.equal(first, second)


def test_key_changes_with_weights_data_transform_and_views():
    data, t = tiny_set(), teacher()
    base = cache_key(t, data, 2, 0)
    assert cache_key(t, data, 2, 0) == base
    assert cache_key(teacher(seed=1), data, 2, 0) != base  # other weights
    with torch.no_grad():
        t2 = teacher()
        p = next(t2.parameters())
        p[(0,) * p.ndim] += 1e-3  # one weight nudged
    assert cache_key(t2, data, 2, 0) != base
    assert cache_key(t, tiny_set(seed=1), 2, 0) != base  # other images
    assert cache_key(teacher(size=20), data, 2, 0) != base  # other transform (resolution)
    assert cache_key(t, data, 3, 0) != base  # more views
    assert cache_key(t, data, 3, 0) != cache_key(t, data, 3, 1)  # random crops depend on the seed
    assert cache_key(t, data, 2, 1) == base  # plain + mirror views do not


def test_stale_cache_is_not_used_after_the_teacher_changes(tmp_path):
    data = tiny_set()
    a, _ = cached_teacher_logits(teacher(0), data, 1, 0, tmp_path)
    b, info = cached_teacher_logits(teacher(1), data, 1, 0, tmp_path)
    assert not info["hit"] and not torch.allclose(a, b)
    assert len(list((tmp_path / "teacher_outputs").glob("*.npy"))) == 2


def test_view_1_is_the_teacher_on_the_mirrored_image():
    data, t = tiny_set(), teacher()
    out = compute_teacher_logits(t, data, 2, view_seed=0, batch_size=64)
    mirrored = ImageSet(data.images.flip(-1), data.labels, data.ids, data.class_names)
    direct = compute_teacher_logits(t, mirrored, 1, view_seed=0, batch_size=64)
    assert torch.allclose(out[:, 1], direct[:, 0], atol=1e-4)
    assert F.mse_loss(out[:, 0], out[:, 1]) > 0
