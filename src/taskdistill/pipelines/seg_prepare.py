"""Segmentation data for a run: the dataset, the few-shot split by image count, the transfer set, the test split."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from taskdistill.config.schema import RunConfig
from taskdistill.data.composite import CompositeSpec, load_fashion_composite
from taskdistill.data.decode import DecodePolicy
from taskdistill.data.image_set import ImageSet
from taskdistill.data.segmentation import SegmentationSet, SegTaskData, few_shot_images, load_seg_folders
from taskdistill.data.sources import TaskData
from taskdistill.data.splits import FewShotSplit
from taskdistill.errors import DataError
from taskdistill.pipelines.prepare import build_transfer_set, decode_policy_for, load_size_for, store_options

SEG_DATASETS = ("fashion-composite", "seg-folder")


@dataclass
class PreparedSegData:
    """Every set a segmentation run uses. `transfer` (images only) never holds labeled, validation or test images."""

    labeled: SegmentationSet
    val: SegmentationSet | None
    transfer: ImageSet
    test: SegmentationSet
    split: FewShotSplit
    policy: DecodePolicy | None = None  # segmentation images are squashed with their masks (not recorded yet)

    @property
    def class_names(self) -> list[str]:
        return self.labeled.class_names

    def summary(self) -> dict[str, int]:
        return {"labeled": len(self.labeled), "val": len(self.val) if self.val is not None else 0,
                "transfer": len(self.transfer), "test": len(self.test)}


def composite_spec(cfg: RunConfig) -> CompositeSpec:
    return CompositeSpec(**dataclasses.asdict(cfg.segmentation.composite))


def load_seg_task_data(cfg: RunConfig) -> SegTaskData:
    """The dataset named by `data.dataset`: the built-in composite (cached under the distill cache folder) or a folder."""
    d = cfg.data
    if d.dataset == "fashion-composite":
        cache = Path(cfg.distill.cache_dir or Path(cfg.output_dir) / ".cache")
        return load_fashion_composite(composite_spec(cfg), d.root, cache_dir=cache)
    if d.dataset == "seg-folder":
        return load_seg_folders(d.root, d.test_root, load_size_for(cfg), cfg.segmentation.ignore_index)
    import difflib

    close = difflib.get_close_matches(d.dataset, SEG_DATASETS, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise DataError(f"dataset '{d.dataset}' is not a segmentation dataset.{hint} With task: segmentation use "
                    f"data.dataset={' or '.join(SEG_DATASETS)}")


def prepare_seg_data(cfg: RunConfig, task: SegTaskData | None = None) -> PreparedSegData:
    """Everything a segmentation run needs, validated before any run folder is written (`task`: preloaded data)."""
    task = task if task is not None else load_seg_task_data(cfg)
    s, d = cfg.segmentation, cfg.data
    split_seed = cfg.seed if d.split_seed is None else d.split_seed
    split = few_shot_images(len(task.train), s.labeled_images, split_seed, s.val_images)
    pool = TaskData(train=task.train.unlabeled(), test=task.test.unlabeled())
    transfer = build_transfer_set(pool, split, cfg.distill.transfer, split_seed,
                                  decode_policy_for(d, load_size_for(cfg)), d.on_bad_image, store=store_options(d))
    return PreparedSegData(
        labeled=task.train.subset(split.labeled),
        val=task.train.subset(split.val) if len(split.val) else None,
        transfer=transfer,
        test=task.test,
        split=split,
    )
