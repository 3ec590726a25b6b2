"""Throughput with 1 vs P processes (torch DDP, gloo on the CPU), and the streaming rate from tar shards.

Run (let the machine be idle; a loaded CPU measures the other work):
    .venv/bin/python benchmarks/ddp_throughput.py [--parts embed,distill,stream] [--images 4000] [--out DIR]

Every measurement runs in fresh processes joined in one process group; the clock starts and stops at a
barrier, so imports and data loading are not timed. The cores are shared fairly: P processes get
`--cores // P` threads each (1 process: all cores; 2 processes on 2 cores: 1 thread each).

(a) embed: `embed_pool` over `--images` Fashion-MNIST training images written as PNG tar shards, encoder
    `--encoder` (packaged ImageNet weights) at `--encoder-size` px, shards of images/8 (split over ranks).
    Images/s, and whether the files equal the 1-process files byte for byte.
(b) distill: the teacher-output cache build (teacher `--teacher` at 64 px, 1 view) and `--epochs` epochs of
    cached distillation into resnet10t at 32 px, global batch 128, over `--images` transfer images.
    Images/s of each.
(c) stream: one process reading the shards of (a) with `ShardStream` (decode to 64 px, batches of 128) with
    0, 1 and 2 DataLoader workers: images/s.
Writes `summary.json` and `summary.md` into `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from taskdistill.atomic import write_json, write_text
from taskdistill.cache.teacher_outputs import cached_teacher_outputs
from taskdistill.config import RunConfig, load_config
from taskdistill.data.image_set import ImageSet
from taskdistill.data.sources import load_fashion_mnist
from taskdistill.data.streaming import ShardStream, expand_shards
from taskdistill.engine.batches import ViewBatches
from taskdistill.engine.loop import Schedule, fit
from taskdistill.kinds import Classification
from taskdistill.retrieval.embed import EncoderSpec, embed_pool
from taskdistill.retrieval.pool import open_pool
from taskdistill.tasks import DistillTask


def write_pool(images: ImageSet, folder: Path, per_shard: int) -> None:
    """PNG tar shards of `images` (webdataset layout: `<key>.png`)."""
    import io
    import tarfile

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for s, lo in enumerate(range(0, len(images), per_shard)):
        with tarfile.open(folder / f"shard-{s:05d}.tar", "w") as tar:
            for i in range(lo, min(lo + per_shard, len(images))):
                buf = io.BytesIO()
                Image.fromarray(images.images[i, 0].numpy()).save(buf, format="PNG")
                info = tarfile.TarInfo(f"{i:07d}.png")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)


def transfer_images(n: int) -> ImageSet:
    train = load_fashion_mnist().train
    return train.subset(torch.arange(n), drop_labels=True)


def timed(fn: Any) -> float:
    """Seconds `fn()` takes on the slowest rank (barriers before and after)."""
    if dist.is_initialized():
        dist.barrier()
    start = time.perf_counter()
    fn()
    if dist.is_initialized():
        dist.barrier()
    return time.perf_counter() - start


def run_embed(args: argparse.Namespace, world: int) -> dict[str, Any]:
    pool = open_pool(args.work / "pool")
    spec = EncoderSpec(name=args.encoder, pretrained=True, input_size=args.encoder_size)
    out = args.work / f"emb-{world}"
    seconds = timed(lambda: embed_pool(pool, spec, out, shard_size=max(1, args.images // 8), batch_size=128,
                                       force=True))
    return {"seconds": seconds, "images": len(pool)}


def run_distill(args: argparse.Namespace, world: int) -> dict[str, Any]:
    cfg = load_config(RunConfig, None, [f"teacher.model.name={args.teacher}"])
    transfer = transfer_images(args.images)
    torch.manual_seed(0)
    teacher = Classification().build_model(cfg.teacher.model, 10, cfg).eval()
    torch.manual_seed(1)
    student = Classification().build_model(cfg.student.model, 10, cfg)
    box: dict[str, Any] = {}

    def build() -> None:
        box["outputs"], _ = cached_teacher_outputs(teacher, transfer, 1, 0, args.work / f"cache-{world}", 128)

    cache_s = timed(build)
    task = DistillTask(student, box["outputs"], 2.0, view_seed=0)
    schedule = Schedule(epochs=args.epochs, batch_size=128, lr=2e-3, weight_decay=0.05)
    result: dict[str, Any] = {}
    fit_s = timed(lambda: result.update(r=fit(task, ViewBatches(transfer, 1, 0), schedule, progress=False)))
    return {"cache_seconds": cache_s, "cache_images": len(transfer), "distill_seconds": fit_s,
            "distill_images": result["r"].images_seen}


def _worker(rank: int, world: int, port: int, threads: int, part: str, args: argparse.Namespace) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out = {"embed": run_embed, "distill": run_distill}[part](args, world)
        if rank == 0:
            (args.work / f"{part}-{world}.json").write_text(json.dumps(out))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def measure(part: str, world: int, args: argparse.Namespace) -> dict[str, Any]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threads = max(1, args.cores // world)
    mp.start_processes(_worker, args=(world, port, threads, part, args), nprocs=world, join=True,
                       start_method="spawn")
    return {"processes": world, "threads_each": threads,
            **json.loads((args.work / f"{part}-{world}.json").read_text())}


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.npy"))
    return names == sorted(p.name for p in b.glob("*.npy")) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def stream_rates(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    urls = expand_shards(str(args.work / "pool"))
    rows = []
    for workers in (0, 1, 2):
        stream = ShardStream(urls, 64, epoch_images=args.images, workers=workers, shuffle_buffer=1000)
        count = {"n": 0}

        def read(s: ShardStream = stream, c: dict[str, int] = count) -> None:
            for b in s.epoch_batches(0, 128, 0, 1):
                c["n"] += len(b["images"])

        seconds = timed(read)
        rows.append({"workers": workers, "images": count["n"], "seconds": seconds,
                     "images_per_s": count["n"] / seconds})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="embed,distill,stream")
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--processes", type=int, default=2, help="compare 1 process with this many")
    p.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--encoder", default="tf_efficientnet_lite0")
    p.add_argument("--encoder-size", type=int, default=64)
    p.add_argument("--teacher", default="tf_efficientnet_lite2")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ddp_throughput"))
    args = p.parse_args()
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    args.work = Path(tempfile.mkdtemp(prefix="ddp-bench-"))
    summary: dict[str, Any] = {"images": args.images, "cores": args.cores, "torch": torch.__version__}
    try:
        write_pool(transfer_images(args.images), args.work / "pool", max(1, args.images // 8))
        for part in ("embed", "distill"):
            if part not in parts:
                continue
            one, many = measure(part, 1, args), measure(part, args.processes, args)
            summary[part] = {"one": one, "many": many}
            if part == "embed":
                summary[part]["byte_identical"] = same_files(args.work / "emb-1", args.work / f"emb-{args.processes}")
            print(json.dumps({part: summary[part]}, indent=1))
        if "stream" in parts:
            summary["stream"] = stream_rates(args)
            print(json.dumps({"stream": summary["stream"]}, indent=1))
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    write_json(args.out / "summary.json", summary)
    write_text(args.out / "summary.md", markdown(summary, args.processes))
    print(markdown(summary, args.processes))


def _rate(d: dict[str, Any], images: str, seconds: str) -> float:
    return d[images] / d[seconds]


def markdown(s: dict[str, Any], p: int) -> str:
    lines = [f"# DDP throughput: 1 vs {p} processes ({s['cores']} cores, {s['images']} images, torch {s['torch']})", "",
             f"| what | 1 process (img/s) | {p} processes (img/s) | ratio |", "|---|---|---|---|"]
    rows = []
    if "embed" in s:
        rows.append(("embed", s["embed"], "images", "seconds"))
    if "distill" in s:
        rows += [("teacher-output cache build", s["distill"], "cache_images", "cache_seconds"),
                 ("distillation epochs", s["distill"], "distill_images", "distill_seconds")]
    for name, d, images, seconds in rows:
        one, many = _rate(d["one"], images, seconds), _rate(d["many"], images, seconds)
        lines.append(f"| {name} | {one:.1f} | {many:.1f} | {many / one:.2f}x |")
    if "embed" in s:
        lines += ["", f"Embeddings byte-identical to 1 process: {s['embed']['byte_identical']} "
                      f"(threads differ: 1 process uses {s['embed']['one']['threads_each']}, each of {p} uses "
                      f"{s['embed']['many']['threads_each']})."]
    if "stream" in s:
        lines += ["", "| stream from tar shards (1 process, decode to 64 px) | img/s |", "|---|---|"]
        lines += [f"| {r['workers']} DataLoader workers | {r['images_per_s']:.0f} |" for r in s["stream"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
