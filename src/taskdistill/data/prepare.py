"""Load the dataset and cut it into labeled / validation / transfer / test sets, as a config asks.

`PreparedData` is what every task kind's `prepare` returns (`kinds/`); the functions here are the
classification loaders and the pieces both kinds share (decode policy, stores, transfer sets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from taskdistill import distributed
from taskdistill.config.schema import DataConfig, RunConfig, TransferConfig
from taskdistill.data.decode import DecodePolicy
from taskdistill.data.image_set import UNLABELED, ImageSet
from taskdistill.data.segmentation import SegmentationSet
from taskdistill.data.sources import TaskData, load_dataset
from taskdistill.data.splits import FewShotSplit, few_shot_split
from taskdistill.data.stored_sets import StoreOptions, load_image_files
from taskdistill.errors import ConfigError, DataError

if TYPE_CHECKING:
    from taskdistill.data.streaming import ShardStream

LabeledSet = ImageSet | SegmentationSet


@dataclass
class PreparedData:
    """Every set a run uses: labeled / validation / test sets of the task kind (`ImageSet` with labels, or
    `SegmentationSet` with masks) and an unlabeled transfer set that never holds labeled, validation or test
    images (a `ShardStream` for a streamed `wds:` source)."""

    labeled: LabeledSet
    val: LabeledSet | None
    transfer: ImageSet | ShardStream
    test: LabeledSet
    split: FewShotSplit
    policy: DecodePolicy | None = None  # how the task's files became pixels (recorded in every checkpoint)
    skipped: list[str] = field(default_factory=list)  # unreadable labeled/test files, left out

    @property
    def class_names(self) -> list[str]:
        return self.labeled.class_names

    def summary(self) -> dict[str, int]:
        return {"labeled": len(self.labeled), "val": len(self.val) if self.val is not None else 0,
                "transfer": len(self.transfer), "test": len(self.test), "skipped_bad_images": len(self.skipped)}


def load_size_for(cfg: RunConfig) -> int:
    """Folder/CSV images are decoded once at the largest resolution any model of the run needs."""
    if cfg.data.load_size is not None:
        return cfg.data.load_size
    models = (cfg.teacher.model, *cfg.teacher.ensemble, cfg.student.model)
    sizes = [m.input_size for m in models if m.input_size is not None]
    return max(sizes) if sizes else 224


def decode_policy_for(data: DataConfig, size: int) -> DecodePolicy:
    """The decode policy of `data.*` at `size`; a bad value is a ConfigError naming the key."""
    try:
        return DecodePolicy(size=int(size), resize=data.resize, crop_pct=float(data.crop_pct),
                            interpolation=data.interpolation, color=data.color, jpeg_draft=bool(data.jpeg_draft))
    except ValueError as e:
        raise ConfigError(f"{e} (data.load_size / data.resize / data.crop_pct / data.interpolation / data.color)") from None


def store_options(data: DataConfig, progress: bool = True) -> StoreOptions:
    if data.decode_workers is not None and data.decode_workers < 1:
        raise ConfigError(f"data.decode_workers must be >= 1 or null (every usable core), got {data.decode_workers}")
    return StoreOptions(Path(data.store_dir) if data.store_dir else None, data.decode_workers, progress)


def load_task_data(data: DataConfig, policy: DecodePolicy | int) -> TaskData:
    pol = policy if isinstance(policy, DecodePolicy) else decode_policy_for(data, policy)
    return load_dataset(data.dataset, data.root, data.test_root, pol, data.on_bad_image, data.download,
                        store_options(data), data.on_empty_class)


def _transfer_from_manifest(path: str, class_names: list[str], policy: DecodePolicy | int, on_bad_image: str,
                            store: StoreOptions | None = None) -> ImageSet:
    import csv

    manifest = Path(path)
    if not manifest.is_file():
        raise DataError(f"transfer-set manifest '{manifest}' does not exist (distill.transfer.source)")
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "location" in rows[0]:  # a curated manifest (`taskdistill curate`): paths or `shard.tar#key`
        if any(not (r["location"] or "").strip() for r in rows):
            raise DataError(f"transfer-set manifest '{manifest}' has a row with an empty 'location'")
        locations = [r["location"].strip() for r in rows]
        ids = [(r.get("id") or "").strip() or loc for r, loc in zip(rows, locations, strict=True)]
    elif not rows or "path" not in rows[0]:
        raise DataError(f"transfer-set manifest '{manifest}' needs a 'path' (or 'location') column and at least one row")
    else:
        paths = [Path(r["path"]) if Path(r["path"]).is_absolute() else manifest.parent / r["path"] for r in rows]
        locations = ids = [str(p) for p in paths]  # already joined to the manifest's folder
    base = manifest.parent if rows and "location" in rows[0] else None
    pol = policy if isinstance(policy, DecodePolicy) else DecodePolicy(int(policy))
    return load_image_files(locations, [UNLABELED] * len(locations), ids, class_names, pol, on_bad_image,  # type: ignore[arg-type]
                            store or StoreOptions(), f"transfer set {manifest}", base=base)


def build_transfer_set(task: TaskData, split: FewShotSplit, cfg: TransferConfig, seed: int, policy: DecodePolicy,
                       on_bad_image: str, keep_labels: bool = False, store: StoreOptions | None = None) -> ImageSet:
    """The unlabeled images to distill over: the task's training images minus the labeled ones (default), or a
    manifest of image paths; capped at `max_images` by a seeded random choice."""
    if cfg.source == "unlabeled":
        pool = task.train.subset(split.unlabeled, drop_labels=not keep_labels)  # labels: benchmarks only
    else:
        pool = _transfer_from_manifest(cfg.source, task.class_names, policy, on_bad_image, store or StoreOptions())
    if len(pool) == 0:
        raise DataError("the transfer set is empty: every training image is labeled. Give distill.transfer.source")
    if cfg.max_images is not None and len(pool) > cfg.max_images:
        pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed + 1))[: cfg.max_images]
        pool = pool.subset(torch.sort(pick).values)
    return pool


def stream_transfer_set(cfg: TransferConfig, seed: int, load_size: int | DecodePolicy,
                        on_bad_image: str) -> ShardStream:
    """A `wds:` transfer source as a stream: shards listed (and, without `epoch_images`, counted) by rank 0;
    samples decoded by the run's decode policy (`load_size`), like the stored sets."""
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
    d = cfg.data
    policy = decode_policy_for(d, size)
    store = store_options(d)
    task = load_task_data(d, policy)
    split_seed = cfg.seed if d.split_seed is None else d.split_seed
    split = few_shot_split(task.train.labels, task.class_names, split_seed, d.labels_per_class, d.max_per_class,
                           d.label_fraction, d.val_per_class)
    if cfg.distill.transfer.source.startswith("wds:"):
        transfer: ImageSet | ShardStream = stream_transfer_set(cfg.distill.transfer, cfg.seed, policy, d.on_bad_image)
    else:
        transfer = build_transfer_set(task, split, cfg.distill.transfer, split_seed, policy, d.on_bad_image,
                                      store=store)
    return PreparedData(
        labeled=task.train.subset(split.labeled),
        val=task.train.subset(split.val) if len(split.val) else None,
        transfer=transfer,
        test=task.test,
        split=split,
        policy=task.policy,
        skipped=sorted(set(task.train.skipped) | set(task.test.skipped)),
    )
