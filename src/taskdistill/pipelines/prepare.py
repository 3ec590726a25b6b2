"""Load the dataset and cut it into labeled / validation / transfer / test sets, as a config asks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from taskdistill.config.schema import DataConfig, RunConfig, TransferConfig
from taskdistill.data.image_set import UNLABELED, ImageSet
from taskdistill.data.sources import TaskData, decode_images, load_dataset
from taskdistill.data.splits import FewShotSplit, few_shot_split
from taskdistill.engine import distributed
from taskdistill.errors import DataError

if TYPE_CHECKING:
    from taskdistill.data.streaming import ShardStream


@dataclass
class PreparedData:
    """Every image set a run uses. `transfer` never holds labeled, validation or test images; it is a
    `ShardStream` for a streamed (`wds:`) source."""

    labeled: ImageSet
    val: ImageSet | None
    transfer: ImageSet | ShardStream
    test: ImageSet
    split: FewShotSplit

    @property
    def class_names(self) -> list[str]:
        return self.labeled.class_names

    def summary(self) -> dict[str, int]:
        return {"labeled": len(self.labeled), "val": len(self.val) if self.val is not None else 0,
                "transfer": len(self.transfer), "test": len(self.test),
                "skipped_bad_images": len(set(self.labeled.skipped) | set(self.test.skipped))}


def load_size_for(cfg: RunConfig) -> int:
    """Folder/CSV images are decoded once at the largest resolution any model of the run needs."""
    if cfg.data.load_size is not None:
        return cfg.data.load_size
    sizes = [m.input_size for m in (cfg.teacher.model, cfg.student.model) if m.input_size is not None]
    return max(sizes) if sizes else 224


def load_task_data(data: DataConfig, load_size: int) -> TaskData:
    return load_dataset(data.dataset, data.root, data.test_root, load_size, data.on_bad_image, data.download)


def _transfer_from_manifest(path: str, class_names: list[str], load_size: int, on_bad_image: str) -> ImageSet:
    import csv

    manifest = Path(path)
    if not manifest.is_file():
        raise DataError(f"transfer-set manifest '{manifest}' does not exist (distill.transfer.source)")
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "location" in rows[0]:  # a curated manifest (`taskdistill curate`): paths or `shard.tar#key`
        from taskdistill.retrieval.pool import decode_locations

        if any(not (r["location"] or "").strip() for r in rows):
            raise DataError(f"transfer-set manifest '{manifest}' has a row with an empty 'location'")
        locations = [r["location"].strip() for r in rows]
        ids = [(r.get("id") or "").strip() or loc for r, loc in zip(rows, locations, strict=True)]
        return decode_locations(locations, ids, class_names, load_size, on_bad_image,  # type: ignore[arg-type]
                                base=manifest.parent)
    if not rows or "path" not in rows[0]:
        raise DataError(f"transfer-set manifest '{manifest}' needs a 'path' (or 'location') column and at least one row")
    paths = [Path(r["path"]) if Path(r["path"]).is_absolute() else manifest.parent / r["path"] for r in rows]
    return decode_images(paths, [UNLABELED] * len(paths), class_names, load_size, on_bad_image,  # type: ignore[arg-type]
                         [str(p) for p in paths], desc="decode transfer set")


def build_transfer_set(task: TaskData, split: FewShotSplit, cfg: TransferConfig, seed: int, load_size: int,
                       on_bad_image: str, keep_labels: bool = False) -> ImageSet:
    """The unlabeled images to distill over: the task's training images minus the labeled ones (default), or a
    manifest of image paths; capped at `max_images` by a seeded random choice."""
    if cfg.source == "unlabeled":
        pool = task.train.subset(split.unlabeled, drop_labels=not keep_labels)  # labels: benchmarks only
    else:
        pool = _transfer_from_manifest(cfg.source, task.class_names, load_size, on_bad_image)
    if len(pool) == 0:
        raise DataError("the transfer set is empty: every training image is labeled. Give distill.transfer.source")
    if cfg.max_images is not None and len(pool) > cfg.max_images:
        pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed + 1))[: cfg.max_images]
        pool = pool.subset(torch.sort(pick).values)
    return pool


def stream_transfer_set(cfg: TransferConfig, seed: int, load_size: int, on_bad_image: str) -> ShardStream:
    """A `wds:` transfer source as a stream: shards listed (and, without `epoch_images`, counted) by rank 0."""
    from taskdistill.data.streaming import ShardStream, count_images, expand_shards

    urls = distributed.on_main(lambda: expand_shards(cfg.source))
    epoch = cfg.epoch_images
    if epoch is None:
        total = distributed.on_main(lambda: count_images(urls))
        if total == 0:
            raise DataError(f"the shards of '{cfg.source}' hold no images (distill.transfer.source)")
        epoch = min(total, cfg.max_images) if cfg.max_images is not None else total
    return ShardStream(urls, load_size, epoch, seed, cfg.views, cfg.workers, cfg.shuffle_buffer,
                       on_bad_image)  # type: ignore[arg-type]


def prepare_data(cfg: RunConfig) -> PreparedData:
    """Everything data-related a run needs, validated before any run folder is written."""
    size = load_size_for(cfg)
    task = load_task_data(cfg.data, size)
    d = cfg.data
    split_seed = cfg.seed if d.split_seed is None else d.split_seed
    split = few_shot_split(task.train.labels, task.class_names, split_seed, d.labels_per_class, d.max_per_class,
                           d.label_fraction, d.val_per_class)
    if cfg.distill.transfer.source.startswith("wds:"):
        transfer: ImageSet | ShardStream = stream_transfer_set(cfg.distill.transfer, cfg.seed, size, d.on_bad_image)
    else:
        transfer = build_transfer_set(task, split, cfg.distill.transfer, split_seed, size, d.on_bad_image)
    return PreparedData(
        labeled=task.train.subset(split.labeled),
        val=task.train.subset(split.val) if len(split.val) else None,
        transfer=transfer,
        test=task.test,
        split=split,
    )
