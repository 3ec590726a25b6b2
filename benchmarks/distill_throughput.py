"""How fast is distillation? Cached teacher outputs against plain training and against torchdistill.

Run (torchdistill lives only in the benchmark's environment; `make bench-distill` creates it):
    .venv-bench/bin/python benchmarks/distill_throughput.py [--parts a,b,c,d] [--images 4000] [--epochs 6]

Setup: Fashion-MNIST, 10 labels/class (seed 0), teacher EfficientNet-Lite2 (packaged ImageNet weights)
at `--teacher-size` px finetuned on the labels (lp-ft), student EfficientNet-Lite0 at 32 px from one fixed
random init, `--images` transfer images, batch 128, AdamW + cosine as in the sweep config.

(a) one distillation epoch on cached outputs / one plain supervised epoch (cross-entropy on the same
    images with their true labels), same student, same batches; median of 3 alternating repeats.
(b) end to end against torchdistill (teacher forwarded every step): our cache build + `--epochs` epochs
    vs torchdistill's `--epochs` epochs, same teacher, student init, KL loss, temperature, data; wall
    time and test top-1 right after distillation (no label finetune).
(c) soft-label storage: bytes per cached view and test top-1 after distillation with full float16
    logits vs top-k probabilities (same student init and batches); plus, for a 1000-class output (the
    teacher's ImageNet head, as TDMR's proxy space uses), bytes per view and the KL divergence of the
    top-k reconstruction from the full distribution.
(d) what else could speed up the student: torch.compile and bf16 autocast, one distillation epoch each
    against eager float32 (after a warm-up epoch that absorbs compilation).
Writes `summary.md` / `summary.json` into `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from taskdistill.atomic import write_json, write_text
from taskdistill.cache.soft_labels import bytes_per_view, compress_topk, expand_topk
from taskdistill.cache.teacher_outputs import Storage, cached_teacher_outputs
from taskdistill.cli.common import shipped_configs
from taskdistill.config import RunConfig, load_config
from taskdistill.data.prepare import (
    build_transfer_set,
    decode_policy_for,
    load_size_for,
    load_task_data,
    prepare_data,
)
from taskdistill.data.views import model_input
from taskdistill.engine.batches import ImageBatches, ViewBatches
from taskdistill.engine.device import set_threads
from taskdistill.engine.evaluate import evaluate
from taskdistill.engine.loop import Schedule, fit
from taskdistill.kinds import Classification
from taskdistill.tasks import DistillTask, SupervisedTask

sys.path.insert(0, str(Path(__file__).parent))
KIND = Classification()


class Bf16Task:
    """Runs another task's forward under CPU bf16 autocast (benchmark only)."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def trainable_parameters(self):  # noqa: ANN201
        return self.task.trainable_parameters()

    def train(self, mode: bool = True) -> None:
        self.task.train(mode)

    def __call__(self, batch):  # noqa: ANN001, ANN204
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.task(batch)


def labeled_transfer(cfg: RunConfig, data) -> Any:  # noqa: ANN001
    """The transfer images with their (hidden) true labels, for the plain supervised epoch."""
    policy = decode_policy_for(cfg.data, load_size_for(cfg))
    task = load_task_data(cfg.data, policy)
    out = build_transfer_set(task, data.split, cfg.distill.transfer, cfg.seed, policy, cfg.data.on_bad_image,
                             keep_labels=True)
    assert out.ids == data.transfer.ids, "transfer ids differ from prepare_data's"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="a,b,c,d")
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--teacher-size", type=int, default=128)
    ap.add_argument("--topk", default="2,4")
    ap.add_argument("--seeds", default="0,1,2", help="(c): student init and batch-order seeds")
    ap.add_argument("--cache-batch", type=int, default=128, help="teacher batch size when building the cache")
    ap.add_argument("--out", default="benchmarks/results/distill_throughput")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    out = Path(args.out)
    cfg = load_config(RunConfig, shipped_configs()["fashion-mnist-sweep"], [
        f"distill.transfer.max_images={args.images}", f"teacher.model.input_size={args.teacher_size}",
        f"distill.train.epochs={args.epochs}"])
    set_threads(cfg.num_threads)
    data = prepare_data(cfg)
    n_cls = len(data.class_names)
    report: dict[str, Any] = {"images": len(data.transfer), "epochs": args.epochs, "threads": torch.get_num_threads(),
                              "teacher": f"{cfg.teacher.model.name}@{args.teacher_size}",
                              "student": f"{cfg.student.model.name}@{cfg.student.model.input_size}"}
    torch.manual_seed(0)
    teacher = KIND.build_model(cfg.teacher.model, n_cls, cfg)
    start = time.perf_counter()
    KIND.train_teacher(teacher, cfg.teacher, data.labeled, cfg.seed, torch.device("cpu"))
    report["teacher_finetune_seconds"] = round(time.perf_counter() - start, 1)
    inits: dict[int, dict] = {}

    def student(seed: int = 0) -> torch.nn.Module:
        """The student from the init of `seed` (the same init every time it is asked for)."""
        if seed not in inits:
            torch.manual_seed(1000 + seed)
            inits[seed] = KIND.build_model(cfg.student.model, n_cls, cfg).state_dict()
        m = KIND.build_model(cfg.student.model, n_cls, cfg)
        m.load_state_dict(inits[seed])
        return m

    dt = cfg.distill
    sched = Schedule(epochs=1, batch_size=dt.train.batch_size, lr=dt.train.lr, weight_decay=dt.train.weight_decay)
    cache_dir = out / ".cache"
    cb = args.cache_batch
    full, cache_info = cached_teacher_outputs(teacher, data.transfer, 1, cfg.seed, cache_dir, cb, "cpu")
    report["cache_build_seconds"] = cache_info["seconds"]

    def top1(model: torch.nn.Module) -> float:
        return 100 * evaluate(model, data.test.images, data.test.labels, data.class_names, desc="test")["top1"]

    if "a" in parts:
        plain = labeled_transfer(cfg, data)
        rows = []
        for rep in range(4):  # the first pair warms up allocators and caches; not counted
            s = fit(SupervisedTask(student(), augment="none"), ImageBatches(plain), sched, seed=rep, desc="plain")
            d = fit(DistillTask(student(), full, dt.temperature, cfg.seed), ViewBatches(data.transfer, 1, cfg.seed),
                    sched, seed=rep, desc="distill")
            if rep:
                rows.append({"plain_s": round(s.seconds, 2), "distill_s": round(d.seconds, 2),
                             "ratio": round(d.seconds / s.seconds, 3)})
        report["a"] = {"repeats": rows, "median_ratio": statistics.median(r["ratio"] for r in rows)}
        print("a:", report["a"])

    epochs_sched = dataclasses.replace(sched, epochs=args.epochs)

    def distilled(outputs, seed: int = 0) -> tuple[float, float]:  # noqa: ANN001
        m = student(seed)
        r = fit(DistillTask(m, outputs, dt.temperature, cfg.seed), ViewBatches(data.transfer, 1, cfg.seed),
                epochs_sched, seed=seed, desc="distill")
        return r.seconds, top1(m)

    if "b" in parts:
        from torchdistill_runner import run_torchdistill

        ours_cache_dir = out / ".cache-b"
        start = time.perf_counter()
        outputs, info = cached_teacher_outputs(teacher, data.transfer, 1, cfg.seed, ours_cache_dir, cb, "cpu")
        cache_s = time.perf_counter() - start
        torch.manual_seed(0)
        ours_s, ours_acc = distilled(outputs)
        torch.manual_seed(0)
        m = student(0)
        theirs = run_torchdistill(teacher, m, data.transfer.images, torch.arange(len(data.transfer)),
                                  data.test.images, data.test.labels, epochs=args.epochs,
                                  batch_size=dt.train.batch_size, lr=dt.train.lr,
                                  weight_decay=dt.train.weight_decay, temperature=dt.temperature, seed=0)
        ours_total = cache_s + ours_s
        report["b"] = {"ours_cache_s": round(cache_s, 1), "ours_distill_s": round(ours_s, 1),
                       "ours_total_s": round(ours_total, 1), "ours_top1": round(ours_acc, 2),
                       "torchdistill_s": round(theirs["seconds"], 1), "torchdistill_top1": round(100 * theirs["top1"], 2),
                       "speedup": round(theirs["seconds"] / ours_total, 2)}
        print("b:", report["b"])

    if "c" in parts:
        seeds = [int(x) for x in args.seeds.split(",")]
        stores = [("full float16 logits", full)]
        for k in [int(x) for x in args.topk.split(",")]:
            top, _ = cached_teacher_outputs(teacher, data.transfer, 1, cfg.seed, cache_dir, cb, "cpu",
                                            storage=Storage("topk", k, dt.temperature))
            stores.append((f"top-{k} probabilities", top))
        rows = []
        for name, outputs in stores:
            accs = [round(distilled(outputs, seed)[1], 2) for seed in seeds]
            rows.append({"storage": name, "bytes_per_view": outputs.bytes_per_view, "top1_per_seed": accs,
                         "top1_mean": round(statistics.mean(accs), 2)})
        for r in rows:
            r["mean_minus_full"] = round(r["top1_mean"] - rows[0]["top1_mean"], 2)
        imagenet = KIND.build_model(dataclasses.replace(cfg.teacher.model), 1000, cfg).eval()
        with torch.inference_mode():
            logits = torch.cat([imagenet(model_input(data.transfer.images[i:i + 256], imagenet.preprocess))
                                for i in range(0, 2000, 256)])
        p = torch.softmax(logits / dt.temperature, 1)
        proxy = [{"storage": "full float16 logits", "bytes_per_view": bytes_per_view(1000, None), "kl": 0.0}]
        for k in (8, 16, 24):
            v, i = compress_topk(logits, k, dt.temperature)
            q = expand_topk(v, i, 1000).clamp_min(1e-12)
            kl = (p * (p.clamp_min(1e-12).log() - q.log())).sum(1).mean().item()
            proxy.append({"storage": f"top-{k}", "bytes_per_view": bytes_per_view(1000, k), "kl": round(kl, 4),
                          "top_mass": round(p.topk(k, 1).values.sum(1).mean().item(), 4)})
        report["c"] = {"task_10_classes": rows, "imagenet_1000_classes": proxy}
        print("c:", json.dumps(report["c"], indent=1))

    if "d" in parts:
        variants: dict[str, Any] = {}
        for name in ("eager fp32", "torch.compile", "bf16 autocast"):
            m = student()
            if name == "torch.compile":
                m = torch.compile(m)
            times = []
            for rep in range(2):  # epoch 0 absorbs compilation
                task = DistillTask(m, full, dt.temperature, cfg.seed)
                r = fit(Bf16Task(task) if name == "bf16 autocast" else task, ViewBatches(data.transfer, 1, cfg.seed),
                        sched, seed=rep, desc=name)
                times.append(r.seconds)
            variants[name] = {"first_epoch_s": round(times[0], 1), "epoch_s": round(times[1], 1)}
        base = variants["eager fp32"]["epoch_s"]
        for v in variants.values():
            v["speedup"] = round(base / v["epoch_s"], 2)
        report["d"] = variants
        print("d:", variants)

    write_json(out / "summary.json", report)
    write_text(out / "summary.md", "```json\n" + json.dumps(report, indent=1) + "\n```\n")


if __name__ == "__main__":
    main()
