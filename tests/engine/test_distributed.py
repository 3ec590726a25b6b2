"""Two gloo processes on the CPU against one: training, evaluation, the teacher-output cache and `embed`.

Tolerances: a BN-free model trained with SGD under DDP (global batch 7 split 4 + 3, random crops drawn for
the global batch) ends within 1e-5 of the one-process weights (float summation order is the only
difference), evaluation metrics are equal, and the first batch-norm layer's running mean after one step
(15 + 15 rows) is the one-process one within 1e-5. Segmentation (BN-free, crops drawn for the global batch,
ranks weighted by their labeled pixels) ends within 1e-5 of one process, with equal test metrics. Cache and
embedding files are byte-identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from taskdistill import distributed
from taskdistill.cache.teacher_outputs import (
    Storage,
    build_teacher_outputs,
    cache_key,
    cached_teacher_outputs,
)
from taskdistill.data.image_set import ImageSet
from taskdistill.data.segmentation import SegmentationSet
from taskdistill.engine.batches import EpochSampler, ImageBatches
from taskdistill.engine.evaluate import evaluate
from taskdistill.engine.loop import Schedule, fit
from taskdistill.engine.seg_metrics import evaluate_segmentation
from taskdistill.errors import RunFolderError
from taskdistill.models.base import Preprocess
from taskdistill.models.registry import create_model
from taskdistill.pipelines.run_folder import RunFolder
from taskdistill.retrieval.embed import EncoderSpec, embed_pool
from taskdistill.retrieval.pool import open_pool
from taskdistill.tasks import SupervisedTask
from tests.cache.test_teacher_outputs import Counting, teacher, tiny_set
from tests.distributed_helpers import run_ranks
from tests.retrieval.helpers import write_blobs

CLASSES = ["a", "b", "c"]
ENCODER = EncoderSpec(name="resnet10t", pretrained=False, input_size=32)
STORAGES = {"full": (Storage("full"), 3), "topk": (Storage("topk", 2, 2.0), 2)}  # storage, views


class TinyNet(nn.Module):
    """A BN-free conv net: its gradient does not depend on how a batch is split."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(6, 3)
        self.preprocess = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def labeled(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
                    torch.randint(0, 3, (n,), generator=g), [f"i{i}" for i in range(n)], CLASSES)


def train_and_evaluate() -> dict:
    """The same code on every rank (or in one process): SGD on TinyNet, AdamW on a BN resnet, then metrics."""
    train, test = labeled(30, 0), labeled(22, 1)
    torch.manual_seed(0)
    net = TinyNet()
    fit(SupervisedTask(net, augment="crop-flip", seed=0), ImageBatches(train),
        Schedule(epochs=3, batch_size=7, lr=0.05, optimizer="sgd"), seed=0, progress=False)
    torch.manual_seed(0)
    bn = create_model("resnet10t", 3, input_size=16)
    result = fit(SupervisedTask(bn, augment="flip", seed=0), ImageBatches(train),
                 Schedule(epochs=1, batch_size=30, lr=1e-3), seed=0, progress=False)  # one step, 15 + 15 rows
    return {"net": net.state_dict(), "bn": bn.state_dict(), "images": result.images_seen, "steps": result.steps,
            "metrics": evaluate(net, test.images, test.labels, CLASSES, batch_size=4),
            "bn_metrics": evaluate(bn, test.images, test.labels, CLASSES, batch_size=5)}


def _train_worker(rank: int, out: Path) -> None:
    result = train_and_evaluate()
    folder = RunFolder(out / "run", "seed: 0\n")  # rank 0 creates and writes it, every rank holds its state
    folder.finish_stage("x", {"written_by": rank})
    try:
        RunFolder(out / "run", "seed: 0\n", "new")
        result["error"] = None
    except RunFolderError as e:  # raised on rank 0, and on rank 1 from rank 0's outcome
        result["error"] = str(e)
    torch.save(result, out / f"train-{rank}.pt")


def test_sampler_splits_every_global_batch_and_keeps_its_length() -> None:
    one = EpochSampler(23, 7, shuffle=True, seed=3, drop_last=True)
    parts = [list(EpochSampler(23, 7, shuffle=True, seed=3, drop_last=True, rank=r, world_size=2)) for r in (0, 1)]
    assert len(one) == len(parts[0]) == len(parts[1]) == 3
    for whole, a, b in zip(one, *parts, strict=True):
        assert torch.equal(torch.cat([a, b]), whole) and (len(a), len(b)) == (4, 3)


def test_two_processes_train_and_evaluate_like_one(tmp_path: Path) -> None:
    run_ranks(_train_worker, 2, tmp_path)
    ranks = [torch.load(tmp_path / f"train-{r}.pt") for r in (0, 1)]
    one = train_and_evaluate()
    for key in ("net", "bn"):  # DDP keeps ranks identical, batch-norm statistics included
        assert all(torch.equal(ranks[0][key][k], ranks[1][key][k]) for k in ranks[0][key]), key
    for k, v in one["net"].items():
        assert torch.allclose(ranks[0]["net"][k], v, atol=1e-5, rtol=0), k
    assert ranks[0]["metrics"] == ranks[1]["metrics"] == one["metrics"]
    assert ranks[0]["bn_metrics"] == ranks[1]["bn_metrics"]
    assert ranks[0]["bn_metrics"]["num_images"] == 22
    assert (ranks[0]["steps"], ranks[0]["images"]) == (one["steps"], one["images"]) == (1, 30)
    assert all("already exists" in r["error"] for r in ranks)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["stages"]["x"] == {"written_by": 0}
    # running means are averaged over ranks: after one step from the same weights, the first BN layer (whose
    # input no other BN layer normalised with per-rank statistics) holds the one-process value
    assert torch.allclose(ranks[0]["bn"]["conv1.1.running_mean"], one["bn"]["conv1.1.running_mean"], atol=1e-5)


def build_caches(cache_dir: Path) -> dict[str, dict]:
    infos = {}
    for name, (storage, views) in STORAGES.items():
        _, info = cached_teacher_outputs(teacher(), tiny_set(n=23), views, 0, cache_dir / name, batch_size=5,
                                         storage=storage)
        infos[name] = {k: info[k] for k in ("key", "hit", "teacher_images")}
    _, infos["resumed"] = cached_teacher_outputs(teacher(), tiny_set(n=23), 2, 0, cache_dir / "resume", batch_size=5)
    return infos


def _cache_and_embed_worker(rank: int, out: Path) -> None:
    infos = build_caches(out / "two")
    embed_pool(open_pool(out / "pool"), ENCODER, out / "two" / "emb", shard_size=4, batch_size=3)
    if distributed.is_main():
        (out / "infos.json").write_text(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "path"}
                                                    for k, v in infos.items()}))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cache_and_embed_under_two_processes_are_byte_identical_and_resume_across_world_sizes(tmp_path: Path) -> None:
    write_blobs(tmp_path / "pool" / "a", 7, seed=0)
    write_blobs(tmp_path / "pool" / "b", 6, seed=1)
    data = tiny_set(n=23)
    # a one-process build of the "resume" entry, interrupted after 3 of 10 batches
    partial = tmp_path / "two" / "resume" / "teacher_outputs" / f"{cache_key(teacher(), data, 2, 0)}.partial"
    try:
        build_teacher_outputs(Counting(teacher(), fail_after=3), data, 2, 0, partial, batch_size=5, flush_seconds=0.0)
    except KeyboardInterrupt:
        pass
    run_ranks(_cache_and_embed_worker, 2, tmp_path)
    infos = build_caches(tmp_path / "one")
    embed_pool(open_pool(tmp_path / "pool"), ENCODER, tmp_path / "one" / "emb", shard_size=4, batch_size=3)
    two = json.loads((tmp_path / "infos.json").read_text())
    assert two["full"]["teacher_images"] == infos["full"]["teacher_images"] == 69  # split, not repeated
    assert two["resumed"]["teacher_images"] == 46 - 15  # the 2 processes ran only what was left
    one_files, two_files = _files(tmp_path / "one"), _files(tmp_path / "two")
    arrays = [k for k in one_files if k.endswith(".npy")]
    assert len([k for k in arrays if "/emb-" in k]) == 4 and len([k for k in arrays if "indices" in k]) == 1
    for name in arrays + ["emb/meta.json", "emb/ids.txt"]:
        assert one_files[name] == two_files[name], name
    assert not [k for k in two_files if ".partial" in k or "progress" in k]
    assert np.load(tmp_path / "two" / "emb" / "emb-00000.npy").shape == (4, 512)


class TinySegmenter(nn.Module):
    """A BN-free segmenter with the interface `SupervisedTask(per_pixel=True)` uses (backbone, head, preprocess)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(6, 3, 1)
        self.preprocess = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 12)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def seg_set(n: int, seed: int) -> SegmentationSet:
    g = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, 3, (n, 16, 16), dtype=torch.uint8, generator=g)
    masks[:, :2] = 255  # ignored rows
    return SegmentationSet(torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8, generator=g), masks,
                           [f"s{i}" for i in range(n)], CLASSES)


def train_and_evaluate_segmentation() -> dict:
    """Per-pixel cross-entropy with random crops on TinySegmenter, then the test metrics."""
    train, test = seg_set(17, 0), seg_set(11, 1)
    torch.manual_seed(0)
    net = TinySegmenter()
    fit(SupervisedTask(net, augment="crop-flip", seed=0, per_pixel=True), ImageBatches(train),
        Schedule(epochs=3, batch_size=7, lr=0.05, optimizer="sgd"), seed=0, progress=False)
    return {"net": net.state_dict(), "metrics": evaluate_segmentation(net, test, batch_size=3)}


def _seg_worker(rank: int, out: Path) -> None:
    torch.save(train_and_evaluate_segmentation(), out / f"seg-{rank}.pt")


def test_two_processes_train_and_evaluate_segmentation_like_one(tmp_path: Path) -> None:
    run_ranks(_seg_worker, 2, tmp_path)
    ranks = [torch.load(tmp_path / f"seg-{r}.pt") for r in (0, 1)]
    one = train_and_evaluate_segmentation()
    for k, v in one["net"].items():  # the crops are drawn for the global batch: the same steps as one process
        assert torch.equal(ranks[0]["net"][k], ranks[1]["net"][k]), k
        assert torch.allclose(ranks[0]["net"][k], v, atol=1e-5, rtol=0), k
    # 11 test images in batches of 3: rank 0 predicts batches 0 and 2, rank 1 batches 1 and 3; counts summed
    assert ranks[0]["metrics"] == ranks[1]["metrics"] == one["metrics"]
    assert one["metrics"]["num_pixels"] == 11 * 14 * 16
