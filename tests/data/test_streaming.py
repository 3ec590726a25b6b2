"""Streamed transfer sets: shard lists, a defined epoch length, per-rank and per-worker splits, fsspec URLs,
the distill stage with the teacher on the fly, and a 2-process run over a stream."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch

from taskdistill.config import RunConfig, load_config
from taskdistill.data.prepare import prepare_data
from taskdistill.data.streaming import ShardStream, count_images, expand_shards, sample_index
from taskdistill.engine.loop import Schedule, fit
from taskdistill.errors import ConfigError, DataError
from taskdistill.models.registry import create_model
from taskdistill.pipelines.run import run
from taskdistill.tasks.online_distill import OnlineDistillTask
from tests.conftest import CLASSES, draw, tiny_overrides
from tests.distributed_helpers import run_ranks
from tests.retrieval.helpers import write_shard


def make_shards(folder: Path, shards: int, per_shard: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for s in range(shards):
        samples = [(f"{s:02d}{i:04d}", draw(CLASSES[i % 3], rng), None) for i in range(per_shard)]
        paths.append(folder / f"shard-{s:02d}.tar")
        write_shard(paths[-1], samples)
    return paths


def ids_of(batches: list[dict]) -> list[int]:
    return [int(i) for b in batches for i in b["indices"]]


def test_shard_specs_expand_to_sorted_urls_and_missing_ones_fail(tmp_path: Path) -> None:
    paths = [str(p) for p in make_shards(tmp_path / "s", 3, 2)]
    assert expand_shards(f"wds:{tmp_path / 's'}") == paths
    assert expand_shards(str(tmp_path / "s" / "shard-{00..02}.tar")) == paths
    assert expand_shards(str(tmp_path / "s" / "*.tar")) == paths
    assert count_images(paths) == 6
    with pytest.raises(DataError, match="does not exist"):
        expand_shards(str(tmp_path / "nope" / "shard-{00..01}.tar"))
    with pytest.raises(DataError, match="no .tar shards"):
        expand_shards(str(tmp_path / "s" / "*.zip"))


def test_an_epoch_has_a_defined_length_and_ranks_and_workers_split_the_shards(tmp_path: Path) -> None:
    urls = [str(p) for p in make_shards(tmp_path, 4, 6)]
    every = {sample_index(u, f"{s:02d}{i:04d}") for s, u in enumerate(urls) for i in range(6)}
    for workers in (0, 2):  # 2 or 4 slots over 4 shards: each slot reads whole shards
        stream = ShardStream(urls, 16, epoch_images=24, seed=1, workers=workers, shuffle_buffer=4)
        parts = [list(stream.epoch_batches(0, 6, rank, 2)) for rank in (0, 1)]
        assert [len(p) for p in parts] == [4, 4] == [stream.steps_per_epoch(6)] * 2
        assert all(b["images"].shape == (3, 3, 16, 16) and b["images"].dtype == torch.uint8 for p in parts for b in p)
        seen = ids_of(parts[0]) + ids_of(parts[1])
        assert sorted(seen) == sorted(every)  # one epoch: every image exactly once
    one_shard = ShardStream(urls[:1], 16, epoch_images=6, workers=0)  # fewer shards than slots: split by sample
    split = [ids_of(list(one_shard.epoch_batches(0, 2, r, 2))) for r in (0, 1)]
    assert len(split[0]) == len(split[1]) == 3 and not set(split[0]) & set(split[1])
    again = ShardStream(urls, 16, epoch_images=24, seed=1, workers=2, shuffle_buffer=4)
    assert ids_of(list(again.epoch_batches(0, 6, 0, 2))) == ids_of(parts[0])  # deterministic per epoch
    assert ids_of(list(again.epoch_batches(1, 6, 0, 2))) != ids_of(parts[0])  # reshuffled next epoch
    longer = ShardStream(urls, 16, epoch_images=60, workers=0)  # longer than the data: passes continue
    assert len(list(longer.epoch_batches(0, 12, 0, 1))) == 5
    with pytest.raises(ConfigError, match="shorter than one batch"):
        ShardStream(urls, 16, epoch_images=5).steps_per_epoch(6)


def test_shards_stream_from_an_fsspec_url(tmp_path: Path) -> None:
    local = make_shards(tmp_path, 2, 3)
    for p in local:
        with fsspec.open(f"memory://bucket/shards/{p.name}", "wb") as f:
            f.write(p.read_bytes())
    urls = expand_shards("wds:memory://bucket/shards/")
    assert urls == ["memory:///bucket/shards/shard-00.tar", "memory:///bucket/shards/shard-01.tar"]
    batches = list(ShardStream(urls, 20, epoch_images=6, shuffle_buffer=0).epoch_batches(0, 3, 0, 1))
    from_disk = list(ShardStream([str(p) for p in local], 20, epoch_images=6, shuffle_buffer=0).epoch_batches(0, 3, 0, 1))
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(batches, from_disk, strict=True))


def test_distill_stage_streams_shards_with_the_teacher_on_the_fly(shapes_dataset, tmp_path: Path) -> None:
    train, test = shapes_dataset
    make_shards(tmp_path / "shards", 3, 10)
    over = tiny_overrides(train, test, tmp_path / "runs") + [f"distill.transfer.source=wds:{tmp_path / 'shards'}",
                                                            "distill.transfer.max_images=24", "distill.train.epochs=2",
                                                            "distill.train.batch_size=8", "run.methods=[task-oriented]"]
    cfg = load_config(RunConfig, None, over)
    assert len(prepare_data(cfg).transfer) == 24  # 30 counted, capped at max_images
    run(cfg, only=("teacher", "student_distilled"))
    info = json.loads((tmp_path / "runs" / "tiny" / "run.json").read_text())["stages"]["student_distilled"]
    cost = info["cost"]
    assert cost["fit"]["steps"] == 6 and cost["student_images"] == 48 and cost["teacher_images"] == 48
    assert cost["details"]["shards"] == 3 and cost["details"]["cache"]["mode"] == "teacher on the fly"
    assert 0 <= info["test"]["top1"] <= 1
    from taskdistill.pipelines.methods import task_agnostic
    from tests.conftest import make_cell

    with pytest.raises(ConfigError, match="on the fly"):
        task_agnostic(make_cell(cfg, tmp_path))


def stream_fit(urls: list[str]) -> dict:
    torch.manual_seed(0)
    teacher, student = create_model("resnet10t", 3, input_size=16).eval(), create_model("resnet10t", 3, input_size=12)
    stream = ShardStream(urls, 16, epoch_images=24, seed=0, num_views=2, shuffle_buffer=8)
    result = fit(OnlineDistillTask(student, teacher, 2.0, view_seed=0), stream, Schedule(epochs=2, batch_size=6, lr=1e-3),
                 progress=False)
    return {"state": student.state_dict(), "steps": result.steps, "images": result.images_seen}


def _stream_worker(rank: int, urls: list[str], out: Path) -> None:
    torch.save(stream_fit(urls), out / f"stream-{rank}.pt")


def test_two_processes_train_on_a_stream_in_step(tmp_path: Path) -> None:
    urls = [str(p) for p in make_shards(tmp_path / "s", 4, 6)]
    run_ranks(_stream_worker, 2, urls, tmp_path)
    ranks = [torch.load(tmp_path / f"stream-{r}.pt") for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 8 and ranks[0]["images"] == 48
    assert all(torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]) for k in ranks[0]["state"])
