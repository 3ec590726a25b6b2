import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taskdistill.cache.soft_labels import bytes_per_view, compress_topk, expand_topk
from taskdistill.cache.teacher_outputs import (
    Storage,
    TeacherOutputs,
    build_teacher_outputs,
    cache_key,
    cached_teacher_outputs,
)
from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import model_input
from taskdistill.models.registry import create_model


def tiny_set(n=12, seed=0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(images=torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
                    labels=torch.full((n,), -1), ids=[f"x/{i}" for i in range(n)], class_names=["a", "b", "c"])


def teacher(seed=0, size=16, classes=3):
    torch.manual_seed(seed)
    return create_model("resnet10t", classes, input_size=size).eval()


class Counting:
    """Wraps a model and counts the images it sees; optionally fails after `fail_after` batches."""

    def __init__(self, model, fail_after: int | None = None):
        self.model, self.seen, self.calls, self.fail_after = model, 0, 0, fail_after
        self.preprocess, self.spec = model.preprocess, model.spec

    def eval(self):
        self.model.eval()
        return self

    def state_dict(self):
        return self.model.state_dict()

    def __call__(self, x):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        self.seen += len(x)
        return self.model(x)


def test_hit_after_miss_returns_same_values_without_running_the_teacher(tmp_path):
    data, t = tiny_set(), Counting(teacher())
    first, info1 = cached_teacher_outputs(t, data, 2, view_seed=0, cache_dir=tmp_path, batch_size=5)
    assert not info1["hit"] and t.seen == 24 and first.shape == (12, 2, 3)
    assert isinstance(first.values, np.memmap)  # read memory-mapped, not loaded whole
    second, info2 = cached_teacher_outputs(t, data, 2, view_seed=0, cache_dir=tmp_path, batch_size=5)
    assert info2["hit"] and t.seen == 24 and info2["teacher_images"] == 0
    assert torch.equal(first.dense(), second.dense())


def test_stored_values_are_the_teachers_outputs_in_float16(tmp_path):
    data, t = tiny_set(), teacher()
    out, _ = cached_teacher_outputs(t, data, 1, 0, tmp_path, batch_size=5)
    with torch.no_grad():
        direct = t(model_input(data.images.tensor(), t.preprocess))
    assert torch.allclose(out.dense()[:, 0], direct.half().float(), atol=1e-3)


def test_key_changes_with_weights_data_transform_views_and_storage():
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
    assert cache_key(t, data, 2, 0, kind="features") != base
    topk = cache_key(t, data, 2, 0, storage=Storage("topk", 2, 2.0))
    assert topk != base
    assert cache_key(t, data, 2, 0, storage=Storage("topk", 2, 4.0)) != topk  # temperature
    assert cache_key(t, data, 2, 0, storage=Storage("topk", 1, 2.0)) != topk  # k


def test_stale_cache_is_not_used_after_the_teacher_changes(tmp_path):
    data = tiny_set()
    a, _ = cached_teacher_outputs(teacher(0), data, 1, 0, tmp_path)
    b, info = cached_teacher_outputs(teacher(1), data, 1, 0, tmp_path)
    assert not info["hit"] and not torch.allclose(a.dense(), b.dense())
    assert len([p for p in (tmp_path / "teacher_outputs").iterdir() if p.is_dir()]) == 2


def test_view_1_is_the_teacher_on_the_mirrored_image(tmp_path):
    data, t = tiny_set(), teacher()
    out = cached_teacher_outputs(t, data, 2, 0, tmp_path / "a", batch_size=64)[0].dense()
    mirrored = ImageSet(data.images.tensor().flip(-1), data.labels, data.ids, data.class_names)
    direct = cached_teacher_outputs(t, mirrored, 1, 0, tmp_path / "b", batch_size=64)[0].dense()
    assert torch.allclose(out[:, 1], direct[:, 0], atol=1e-2)
    assert F.mse_loss(out[:, 0], out[:, 1]) > 0


def test_interrupted_build_resumes_where_it_stopped_and_matches_an_uninterrupted_one(tmp_path):
    data = tiny_set(n=20)
    crashing = Counting(teacher(), fail_after=3)  # 4 batches of 5 per view, 2 views: crash in view 0
    with pytest.raises(KeyboardInterrupt):
        cached_teacher_outputs(crashing, data, 2, 0, tmp_path, batch_size=5)
    partial = [p for p in (tmp_path / "teacher_outputs").iterdir() if p.suffix != ".lock"]  # locks are not entries
    assert len(partial) == 1 and partial[0].name.endswith(".partial")  # nothing looks finished
    resumed = Counting(teacher())
    # A build that records progress after every batch: crash after 3, the resume runs only the 5 left.
    crashing2 = Counting(teacher(), fail_after=3)
    folder = tmp_path / "manual.partial"
    with pytest.raises(KeyboardInterrupt):
        build_teacher_outputs(crashing2, data, 2, 0, folder, batch_size=5, flush_seconds=0.0)
    assert json.loads((folder / "progress.json").read_text())["done_batches"] == 3
    computed, k = build_teacher_outputs(resumed, data, 2, 0, folder, batch_size=5, flush_seconds=0.0)
    assert computed == 25 and resumed.calls == 5 and k == 3
    whole, _ = cached_teacher_outputs(teacher(), data, 2, 0, tmp_path / "whole", batch_size=5)
    assert np.array_equal(np.load(folder / "values.npy"), np.asarray(whole.values))
    # and through the public entry point, the interrupted first build finishes and is then a hit
    finished, info = cached_teacher_outputs(Counting(teacher()), data, 2, 0, tmp_path, batch_size=5)
    assert not info["hit"]
    assert np.array_equal(np.asarray(finished.values), np.asarray(whole.values))
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "teacher_outputs").iterdir())


def test_topk_reconstruction_keeps_top_classes_and_spreads_the_rest():
    torch.manual_seed(0)
    logits = torch.randn(50, 100) * 3
    values, indices = compress_topk(logits, k=10, temperature=2.0)
    assert values.dtype == np.float16 and indices.dtype == np.int16 and values.shape == (50, 10)
    probs = expand_topk(values, indices, 100)
    full = torch.softmax(logits / 2.0, dim=1)
    assert torch.allclose(probs.sum(1), torch.ones(50), atol=1e-3)
    top = full.topk(10, dim=1)
    assert torch.allclose(probs.gather(1, top.indices), top.values, atol=1e-3)
    rest = torch.ones_like(full, dtype=torch.bool).scatter_(1, top.indices, False)
    expected_tail = (1 - top.values.sum(1, keepdim=True)) / 90
    assert torch.allclose(probs[rest].view(50, 90), expected_tail.expand(50, 90), atol=1e-3)
    # the reconstruction is closer to the teacher than a uniform guess, and exact when k = K
    assert (full * (full.log() - probs.log())).sum(1).mean() < 0.5
    v_all, i_all = compress_topk(logits, k=100, temperature=2.0)
    assert torch.allclose(expand_topk(v_all, i_all, 100), full, atol=1e-3)
    assert bytes_per_view(1000, 16) == 64 and bytes_per_view(10, None) == 20 and bytes_per_view(40000, 4) == 24


def test_topk_storage_round_trip_and_size(tmp_path):
    data, t = tiny_set(), teacher(classes=40)
    full, _ = cached_teacher_outputs(t, data, 2, 0, tmp_path, batch_size=5)
    top, info = cached_teacher_outputs(t, data, 2, 0, tmp_path, batch_size=5, storage=Storage("topk", 4, 2.0))
    assert top.is_probabilities and top.shape == (12, 2, 40) and info["bytes_per_view"] == 16 == 4 * (2 + 2)
    expected = torch.softmax(full.dense() / 2.0, dim=-1)
    got = top.dense()
    assert torch.allclose(got.sum(-1), torch.ones(12, 2), atol=2e-3)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert TeacherOutputs.open(tmp_path / "teacher_outputs" / info["key"]).temperature == 2.0


# --- integrity: a damaged entry is named, deleted and rebuilt; it never blocks a run -----------------------------

def _entry(tmp_path: Path, info: dict) -> Path:
    return tmp_path / "teacher_outputs" / info["key"]


def _rebuilt(tmp_path, capsys, fragment: str, storage: Storage | None = None) -> None:
    """The next call on the damaged entry rebuilds it, says why in one line, and returns the right values."""
    storage = storage or Storage()
    t = Counting(teacher())
    again, info = cached_teacher_outputs(t, tiny_set(), 2, 0, tmp_path, batch_size=5, storage=storage)
    assert not info["hit"] and t.seen == 24  # the teacher ran again
    err = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert len(err) == 1 and info["key"] in err[0] and fragment in err[0], err
    fresh, _ = cached_teacher_outputs(teacher(), tiny_set(), 2, 0, tmp_path / "fresh", batch_size=5, storage=storage)
    assert torch.equal(again.dense(), fresh.dense())
    assert cached_teacher_outputs(Counting(teacher()), tiny_set(), 2, 0, tmp_path, batch_size=5,
                                  storage=storage)[1]["hit"]  # and the rebuilt entry is used from then on
    assert not [p for p in (tmp_path / "teacher_outputs").iterdir() if "damaged" in p.name or "partial" in p.name]


def test_meta_records_the_size_shape_and_checksum_of_each_array(tmp_path):
    import zlib

    _, info = cached_teacher_outputs(teacher(), tiny_set(), 2, 0, tmp_path, batch_size=5,
                                     storage=Storage("topk", 2, 2.0))
    entry = _entry(tmp_path, info)
    arrays = json.loads((entry / "meta.json").read_text())["arrays"]
    assert set(arrays) == {"values.npy", "indices.npy"}
    for name, rec in arrays.items():
        data = (entry / name).read_bytes()
        assert rec["bytes"] == len(data) and rec["crc32"] == zlib.crc32(data)
        assert rec["shape"] == [12, 2, 2] and rec["dtype"] == ("float16" if name == "values.npy" else "int16")


def test_a_truncated_values_file_is_rebuilt(tmp_path, capsys):
    _, info = cached_teacher_outputs(teacher(), tiny_set(), 2, 0, tmp_path, batch_size=5)
    values = _entry(tmp_path, info) / "values.npy"
    values.write_bytes(values.read_bytes()[:-20])
    _rebuilt(tmp_path, capsys, "were written")


def test_a_values_file_cut_inside_its_header_is_rebuilt(tmp_path, capsys):
    _, info = cached_teacher_outputs(teacher(), tiny_set(), 2, 0, tmp_path, batch_size=5)
    values = _entry(tmp_path, info) / "values.npy"
    values.write_bytes(values.read_bytes()[:30])
    meta = json.loads((_entry(tmp_path, info) / "meta.json").read_text())
    meta.pop("arrays")  # as an entry written before sizes were recorded: numpy's own reading must catch it
    (_entry(tmp_path, info) / "meta.json").write_text(json.dumps(meta))
    _rebuilt(tmp_path, capsys, "values.npy is unreadable")


def test_nan_values_are_rebuilt(tmp_path, capsys):
    _, info = cached_teacher_outputs(teacher(), tiny_set(), 2, 0, tmp_path, batch_size=5)
    entry = _entry(tmp_path, info)
    values = np.load(entry / "values.npy", mmap_mode="r+")
    values[3, 1, :] = np.nan
    values.flush()
    del values
    _rebuilt(tmp_path, capsys, "does not match its CRC32")
    # the same with a checksum that agrees (NaN written before it was recorded): the NaN check catches it
    entry = _entry(tmp_path, info)
    values = np.load(entry / "values.npy", mmap_mode="r+")
    values[0, 0, 0] = np.inf
    values.flush()
    del values
    from taskdistill.cache.teacher_outputs import array_records

    meta = json.loads((entry / "meta.json").read_text())
    (entry / "meta.json").write_text(json.dumps({**meta, "arrays": array_records(entry)}))
    _rebuilt(tmp_path, capsys, "holds 1 NaN/inf value")


def test_a_corrupt_meta_json_is_rebuilt(tmp_path, capsys):
    storage = Storage("topk", 2, 2.0)
    _, info = cached_teacher_outputs(teacher(), tiny_set(), 2, 0, tmp_path, batch_size=5, storage=storage)
    (_entry(tmp_path, info) / "meta.json").write_text('{"format": "teacher-outp')
    _rebuilt(tmp_path, capsys, "meta.json is unreadable", storage)


def test_a_damaged_indices_file_is_rebuilt(tmp_path, capsys):
    storage = Storage("topk", 2, 2.0)
    _, info = cached_teacher_outputs(teacher(), tiny_set(), 2, 0, tmp_path, batch_size=5, storage=storage)
    indices = _entry(tmp_path, info) / "indices.npy"
    data = bytearray(indices.read_bytes())
    data[-1] ^= 0x7F
    indices.write_bytes(bytes(data))
    _rebuilt(tmp_path, capsys, "indices.npy does not match its CRC32", storage)


def test_an_entry_without_checksums_is_still_used_when_sound(tmp_path):
    first, info = cached_teacher_outputs(teacher(), tiny_set(), 2, 0, tmp_path, batch_size=5)
    meta_path = _entry(tmp_path, info) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("arrays")
    meta_path.write_text(json.dumps(meta))
    t = Counting(teacher())
    again, info = cached_teacher_outputs(t, tiny_set(), 2, 0, tmp_path, batch_size=5)
    assert info["hit"] and t.seen == 0 and torch.equal(first.dense(), again.dense())


def test_a_teacher_that_gives_nan_is_not_cached(tmp_path):
    from taskdistill.errors import DataError

    class NaNTeacher(Counting):
        def __call__(self, x):
            return super().__call__(x) * float("nan")

    with pytest.raises(DataError, match=r"hold 72 NaN/inf value\(s\) of 72, so they were not cached.*teacher\.train\.lr"):
        cached_teacher_outputs(NaNTeacher(teacher()), tiny_set(), 2, 0, tmp_path, batch_size=5)
    assert not [p for p in (tmp_path / "teacher_outputs").iterdir() if p.suffix != ".lock"]
    _, info = cached_teacher_outputs(teacher(), tiny_set(), 2, 0, tmp_path, batch_size=5)  # nothing blocks a rerun
    assert not info["hit"]


def test_an_interrupted_build_with_an_unreadable_record_starts_over(tmp_path, capsys):
    data = tiny_set(n=20)
    folder = tmp_path / "b.partial"
    with pytest.raises(KeyboardInterrupt):
        build_teacher_outputs(Counting(teacher(), fail_after=3), data, 2, 0, folder, batch_size=5, flush_seconds=0.0)
    (folder / "values.npy").write_bytes(b"\x93NUMPY")  # the arrays are gone, the record says 3 batches are done
    t = Counting(teacher())
    computed, _ = build_teacher_outputs(t, data, 2, 0, folder, batch_size=5, flush_seconds=0.0)
    assert computed == 40 and t.calls == 8  # every batch again
    assert "cannot be continued" in capsys.readouterr().err
    whole, _ = cached_teacher_outputs(teacher(), data, 2, 0, tmp_path / "whole", batch_size=5)
    assert np.array_equal(np.load(folder / "values.npy"), np.asarray(whole.values))


def test_two_builders_of_one_entry_build_it_once(tmp_path, capsys):
    """Two callers (threads here; processes alike: the lock is a flock on <key>.lock) ask for the same entry
    at once: one computes, the other waits and reads it."""
    import threading

    data, t = tiny_set(), teacher()
    results: list[dict] = []

    def build() -> None:
        results.append(cached_teacher_outputs(t, data, 2, 0, tmp_path, batch_size=4)[1])

    threads = [threading.Thread(target=build) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(r["hit"] for r in results) == [False, True]
    assert sum(r["teacher_images"] for r in results) == 2 * len(data)


def test_reduced_precision_is_part_of_the_key_and_fp32_keys_are_unchanged(tmp_path):
    from taskdistill.cache.teacher_outputs import cache_key, cached_teacher_outputs
    from taskdistill.data.image_set import ImageSet
    from taskdistill.models.registry import create_model

    torch.manual_seed(0)
    teacher = create_model("resnet10t", 3, input_size=16).eval()
    images = torch.randint(0, 255, (10, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    transfer = ImageSet(images, torch.full((10,), -1), [f"i/{k}" for k in range(10)], ["a", "b", "c"])
    fp32 = cache_key(teacher, transfer, 2, 0)
    assert cache_key(teacher, transfer, 2, 0, precision="fp32") == fp32
    assert cache_key(teacher, transfer, 2, 0, precision="bf16") != fp32
    full, info32 = cached_teacher_outputs(teacher, transfer, 2, 0, tmp_path, batch_size=4)
    half, info16 = cached_teacher_outputs(teacher, transfer, 2, 0, tmp_path, batch_size=4, precision="bf16")
    auto, info_auto = cached_teacher_outputs(teacher, transfer, 2, 0, tmp_path, batch_size="auto", precision="auto")
    assert info32["key"] == fp32 != info16["key"] and info_auto["key"] == fp32 and info_auto["hit"]  # auto: fp32 on CPU
    assert torch.allclose(full.dense(), half.dense(), atol=0.1, rtol=0.1)
