"""Transfer sets streamed from webdataset tar shards, local or at any fsspec URL (`s3://`, `gs://`, `https://`, ...).

`distill.transfer.source: "wds:SPEC"` where SPEC is a folder (its `*.tar`, sorted), a brace pattern
(`/data/train-{0000..0099}.tar`), a glob (`s3://bucket/train/*.tar`) or one shard. A sample is the webdataset
group `<key>.<ext>` of one tar; its first image member (`.png`, `.jpg`, ...) is the image. Nothing is loaded
whole: each shard is read once per pass as a stream (`tarfile` "r|" mode over an fsspec file object).

Splitting. The R ranks x K DataLoader workers per rank are R * K slots. In each pass over the data the
shards, shuffled by (seed, epoch, pass), are dealt to the slots round-robin; with fewer shards than slots
every slot reads every shard and keeps every (R * K)-th sample instead. A slot's stream continues with
further passes, so it never runs dry, and a buffer of `shuffle_buffer` samples shuffles within a slot (emptied
at the end of each pass, so a pass yields each of the slot's samples once).

Epoch length. An epoch is `epoch_images // batch_size` steps of a global batch of `batch_size` images; every
rank yields exactly that many batches of its part (so DDP never waits on a rank that ran out), spread over
its workers. Coverage is by shard: an epoch of all images reads each shard about once.

Teacher. A stream has no stable row number to key a cache by, so the distill stage runs the teacher on the
fly on each batch (`tasks.online_distill`): one teacher forward per student image instead of one per
(image, view) once. Worth it when the transfer set does not fit a cache or a GPU teacher is cheap.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import tarfile
from collections.abc import Iterator
from types import ModuleType
from typing import Literal

import fsspec
import numpy as np
import torch
from fsspec.core import url_to_fs
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from taskdistill.data.batch import Batch
from taskdistill.data.decode import DECODE_ERRORS, DecodePolicy
from taskdistill.data.locations import IMAGE_SUFFIXES
from taskdistill.data.sources import decode_image
from taskdistill.distributed import part_start
from taskdistill.errors import ConfigError, DataError

WDS_PREFIX = "wds:"
_IMAGE_EXTS = {s.lstrip(".") for s in IMAGE_SUFFIXES}


def _webdataset() -> ModuleType:
    try:
        import webdataset
    except ImportError:
        raise ConfigError("streamed transfer sets (wds:) need webdataset: pip install 'taskdistill[retrieval]'") from None
    return webdataset


def _expand_braces(spec: str) -> list[str]:
    _webdataset()
    from braceexpand import braceexpand  # installed with webdataset

    return list(braceexpand(spec))


def expand_shards(spec: str) -> list[str]:
    """Shard URLs of a folder, brace pattern, glob or single shard (local paths stay plain paths), sorted
    within each pattern; a missing or empty spec is an error that names it."""
    urls: list[str] = []
    for pattern in _expand_braces(spec.removeprefix(WDS_PREFIX)):
        fs, path = url_to_fs(pattern)
        local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        if any(c in path for c in "*?["):
            found = sorted(fs.glob(path))
        elif fs.isdir(path):
            found = sorted(fs.glob(path.rstrip("/") + "/*.tar"))
        elif fs.exists(path):
            found = [path]
        else:
            raise DataError(f"webdataset shard '{pattern}' does not exist (distill.transfer.source)")
        urls += [p if local else fs.unstrip_protocol(p) for p in found]
    if not urls:
        raise DataError(f"no .tar shards found for '{spec}' (distill.transfer.source); give a folder of *.tar, a "
                        f"brace pattern like shard-{{0000..0099}}.tar, or a glob")
    return urls


def shard_samples(url: str) -> Iterator[tuple[str, bytes | None]]:
    """(key, bytes of its first image member or None) for every sample of one shard, in tar order."""
    tariterators = _webdataset().tariterators
    try:
        with fsspec.open(url, "rb") as stream:
            files = tariterators.tar_file_expander([{"url": url, "stream": stream}])
            for sample in tariterators.group_by_keys(files):
                image = next((v for k, v in sample.items() if k in _IMAGE_EXTS), None)
                yield sample["__key__"], image
    except (OSError, tarfile.TarError, ValueError) as e:
        raise DataError(f"cannot read webdataset shard '{url}': {e}. Rebuild or remove the shard.") from None


def count_images(urls: list[str]) -> int:
    """Samples with an image in all shards (streams every shard once; pass epoch_images to skip it)."""
    return sum(1 for url in urls for _, image in shard_samples(url) if image is not None)


def sample_index(url: str, key: str) -> int:
    """A stable 62-bit id of a sample from its shard's file name and key (the same on every machine)."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return int.from_bytes(hashlib.blake2b(f"{name}/{key}".encode(), digest_size=8).digest(), "little") >> 2


class _SlotDataset(IterableDataset):
    """One rank's batches of one epoch; with DataLoader workers, each worker yields its share."""

    def __init__(self, stream: ShardStream, epoch: int, rank: int, world_size: int, rows: int, steps: int) -> None:
        super().__init__()
        self.stream, self.epoch, self.rank, self.world_size = stream, epoch, rank, world_size
        self.rows, self.steps = rows, steps

    def __iter__(self) -> Iterator[Batch]:
        worker = get_worker_info()
        k, w = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        quota = self.steps // k + (1 if w < self.steps % k else 0)
        yield from self.stream.slot_batches(self.epoch, self.rank * k + w, self.world_size * k, quota, self.rows)


class ShardStream:
    """A transfer set read from tar shards as a stream: `len()` = images per epoch, batches of
    `{"images": uint8 [B, 3, S, S], "indices": int64 [B] (stable sample ids), "views": int64 [B]}`.

    `views`: each sample shows view `v` in [0, num_views) drawn from (seed, epoch, sample id); view 0 is
    the image, 1 its mirror, v >= 2 a crop (`data.views.replay_views`), as for cached transfer sets.
    """

    def __init__(self, urls: list[str], load_size: int | DecodePolicy, epoch_images: int, seed: int = 0, num_views: int = 1,
                 workers: int = 0, shuffle_buffer: int = 1000,
                 on_bad_image: Literal["fail", "skip"] = "fail") -> None:
        if not urls:
            raise DataError("a streamed transfer set needs at least one shard")
        if epoch_images <= 0:
            raise ConfigError(f"distill.transfer.epoch_images must be positive, got {epoch_images}")
        if workers < 0 or shuffle_buffer < 0 or num_views < 1:
            raise ConfigError(f"distill.transfer: workers ({workers}) and shuffle_buffer ({shuffle_buffer}) must be "
                              f">= 0 and views ({num_views}) >= 1")
        self.urls, self.load_size, self.epoch_images, self.seed = list(urls), load_size, epoch_images, seed
        self.num_views, self.workers, self.shuffle_buffer, self.on_bad_image = num_views, workers, shuffle_buffer, on_bad_image

    def __len__(self) -> int:
        return self.epoch_images

    def steps_per_epoch(self, batch_size: int) -> int:
        steps = self.epoch_images // batch_size
        if steps == 0:
            raise ConfigError(f"an epoch of {self.epoch_images} streamed images is shorter than one batch of "
                              f"{batch_size}; raise distill.transfer.epoch_images or lower the batch size")
        return steps

    def epoch_batches(self, epoch: int, batch_size: int, rank: int, world_size: int) -> Iterator[Batch]:
        """This rank's `steps_per_epoch(batch_size)` batches of `epoch`, each its part of a global batch."""
        rows = part_start(batch_size, rank + 1, world_size) - part_start(batch_size, rank, world_size)
        data = _SlotDataset(self, epoch, rank, world_size, rows, self.steps_per_epoch(batch_size))
        if self.workers == 0:
            yield from data
        else:
            yield from DataLoader(data, batch_size=None, num_workers=self.workers)

    def _passes(self, epoch: int, slot: int, slots: int) -> Iterator[tuple[str, str, bytes | None] | None]:
        """(url, key, image bytes) of this slot, pass after pass (endless); None ends each pass."""
        for n_pass in itertools.count():
            order = np.random.default_rng([self.seed, epoch, n_pass]).permutation(len(self.urls))
            got = 0
            if len(self.urls) >= slots:
                for i in order[slot::slots]:
                    for key, image in shard_samples(self.urls[i]):
                        got += 1
                        yield self.urls[i], key, image
            else:
                position = 0
                for i in order:
                    for key, image in shard_samples(self.urls[i]):
                        if position % slots == slot:
                            got += 1
                            yield self.urls[i], key, image
                        position += 1
            if got == 0:
                raise DataError(f"the shards {self.urls[:3]}... hold no samples for slot {slot} of {slots}; use more "
                                f"images than ranks x workers")
            yield None

    def _decoded(self, epoch: int, slot: int, slots: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(sample id, uint8 image [3, S, S]) of this slot, shuffled within a buffer that is emptied at the end
        of every pass, so a pass yields each of the slot's samples once (endless)."""
        rng = np.random.default_rng([self.seed, epoch, slot, 1])
        buffer: list[tuple[int, torch.Tensor]] = []
        for sample in self._passes(epoch, slot, slots):
            if sample is None:
                for j in rng.permutation(len(buffer)):
                    yield buffer[j]
                buffer = []
                continue
            url, key, data = sample
            try:
                if data is None:
                    raise ValueError("no image member (.png, .jpg, ...)")
                item = (sample_index(url, key), decode_image(io.BytesIO(data), self.load_size))
            except DECODE_ERRORS as e:
                if self.on_bad_image == "fail":
                    raise DataError(f"cannot read sample '{key}' of shard '{url}': {e}. Fix the shard, or pass "
                                    f"--on-bad-image skip to leave unreadable samples out") from None
                continue
            if len(buffer) < max(1, self.shuffle_buffer):
                buffer.append(item)
                continue
            j = int(rng.integers(len(buffer)))
            buffer[j], item = item, buffer[j]
            yield item

    def slot_batches(self, epoch: int, slot: int, slots: int, quota: int, rows: int) -> Iterator[Batch]:
        """`quota` batches of `rows` samples from slot `slot` of `slots`."""
        samples = self._decoded(epoch, slot, slots)
        for _ in range(quota):
            chunk = [next(samples) for _ in range(rows)]
            ids = torch.tensor([i for i, _ in chunk], dtype=torch.long)
            if self.num_views > 1:
                views = torch.tensor([int(np.random.default_rng([self.seed, epoch, i]).integers(self.num_views))
                                      for i, _ in chunk], dtype=torch.long)
            else:
                views = torch.zeros(len(chunk), dtype=torch.long)
            yield {"images": torch.stack([img for _, img in chunk]), "indices": ids, "views": views}
