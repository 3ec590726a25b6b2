"""GPU-grade execution, measured (issue 17): teacher-output cache build vs raw forward, distillation vs plain
supervised training, bf16 vs fp32, device utilisation. Prints a table and JSON (also written with --out).

On a GPU (default there: 224 px, 4096 images, batch 256):
    python benchmarks/gpu_throughput.py --device cuda --out benchmarks/results/gpu_throughput/gpu.json
On the CPU, at small sizes (default there: 64 px, 192 images, batch 32):
    python benchmarks/gpu_throughput.py --device cpu --out benchmarks/results/gpu_throughput/cpu.json

Teachers: a ViT-B/16-sized timm model (`vit_base_patch16_224`, random weights, at the input size) and
EfficientNet-Lite2 (`tf_efficientnet_lite2`, random weights). Student: `resnet18` (random weights).
- cache/raw: images/s of the `cached_teacher_outputs` build loop (stored uint8 images read, views, forward,
  float16 writes) against the teacher's bare forward on a ready device tensor at the same batch size (target
  >= 0.85); the end-to-end rate adds the per-entry fixed costs (weights hash for the key, integrity check);
- distill/supervised: images/s of `fit` on `DistillTask` (cached targets) against `fit` on `SupervisedTask`
  (no augmentation) over the same batches (target >= 0.9);
- bf16/fp32: the same measurements at both precisions;
- utilisation: CUDA: mean of `torch.cuda.utilization()` samples during the distillation fit (needs pynvml);
  CPU: process CPU time / (wall time x threads).
Each pair is measured `--repeats` times, interleaved, and the best of each side is reported (all samples are
in the JSON): on a shared machine the best is the figure least disturbed by other load. Rates per second of
this process's CPU time (all threads) are reported too: on a CPU shared with other jobs they compare the
work done, which wall-clock rates cannot (the cache's CPU rate is end to end, fixed costs included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from taskdistill.cache.teacher_outputs import cached_teacher_outputs
from taskdistill.data.image_set import ImageSet
from taskdistill.data.views import model_input
from taskdistill.engine.batches import ImageBatches, ViewBatches
from taskdistill.engine.device import set_threads
from taskdistill.engine.loop import LoopOptions, Schedule, fit
from taskdistill.engine.precision import autocast, bf16_supported, configure_device
from taskdistill.models.registry import create_model
from taskdistill.tasks import DistillTask, SupervisedTask

TEACHERS = {"vit_b16": ("vit_base_patch16_224", True), "lite2": ("tf_efficientnet_lite2", False)}
STUDENT = "resnet18"
CLASSES = 10


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Utilisation:
    """Samples device utilisation in the background while the `with` block runs."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples, self.note = device, [], ""
        self._stop = threading.Event()

    def __enter__(self) -> Utilisation:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        if self.device.type == "cuda":
            try:
                torch.cuda.utilization(self.device)
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
            except Exception as e:  # noqa: BLE001 - pynvml missing: say so in the output
                self.note = f"unavailable ({type(e).__name__}: {e})"
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append(torch.cuda.utilization(self.device))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        if self.device.type == "cuda":
            self.value = sum(self.samples) / len(self.samples) / 100 if self.samples else None
        else:
            self.value = cpu / (wall * torch.get_num_threads())
            self.note = f"process CPU time / (wall x {torch.get_num_threads()} threads)"


def transfer_set(n: int, side: int) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(n) % CLASSES, [f"img/{i}" for i in range(n)],
                    [f"c{k}" for k in range(CLASSES)])


def teacher_model(key: str, size: int, device: torch.device) -> torch.nn.Module:
    name, vit = TEACHERS[key]
    torch.manual_seed(0)
    extra = {"img_size": size} if vit else {}
    return create_model(name, CLASSES, input_size=size, **extra).to(device).eval()


@torch.inference_mode()
def raw_forward(model: torch.nn.Module, batch: int, batches: int, device: torch.device,
                precision: str) -> tuple[float, float]:
    """images/s of the bare forward on a normalised device tensor, `batches` batches after 2 warm-up ones:
    per wall second and per second of this process's CPU time."""
    x = model_input(torch.randint(0, 256, (batch, 3, model.preprocess.input_size, model.preprocess.input_size),
                                  dtype=torch.uint8).to(device), model.preprocess)
    for _ in range(2):
        with autocast(precision, device):
            model(x)
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        with autocast(precision, device):
            model(x)
    sync(device)
    return batch * batches / (time.perf_counter() - start), batch * batches / (time.process_time() - cpu)


def cache_build(model: torch.nn.Module, data: ImageSet, batch: int, device: torch.device,
                precision: str) -> tuple[float, float, float]:
    """images/s of a cold `cached_teacher_outputs` build (one view per image) in a fresh folder: of the build loop
    (`info["seconds"]`: reads, views, forward, float16 writes), end to end (plus the cache key's hash of the
    teacher's weights and the finished entry's integrity check, fixed costs per entry), and end to end per
    second of this process's CPU time (all its threads)."""
    folder = Path(tempfile.mkdtemp(prefix="gpu-throughput-cache-"))
    try:
        cached_teacher_outputs(model, ImageSet(data.images[:batch * 2], data.labels[:batch * 2], data.ids[:batch * 2],
                                               data.class_names), 1, 0, folder / "warm", batch, device,
                               precision=precision)  # warm-up (kernels, autotuner) on another entry
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        _, info = cached_teacher_outputs(model, data, 1, 0, folder, batch, device, precision=precision)
        sync(device)
        images = info["teacher_images"]
        return (images / info["seconds"], images / (time.perf_counter() - start),
                images / (time.process_time() - cpu))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def train_throughput(kind: str, data: ImageSet, size: int, batch: int, device: torch.device,
                     precision: str) -> tuple[float, float | None, str, float]:
    """images/s of one `fit` epoch of the student: distillation on cached targets or plain supervised; also the
    utilisation and images per second of this process's CPU time."""
    torch.manual_seed(0)
    student = create_model(STUDENT, CLASSES, input_size=size).to(device)
    if kind == "distill":
        targets = torch.randn(len(data), 1, CLASSES, generator=torch.Generator().manual_seed(1))
        task: Any = DistillTask(student, targets, temperature=2.0, view_seed=0)
        source: Any = ViewBatches(data, 1, seed=0)
    else:
        task, source = SupervisedTask(student, augment="none"), ImageBatches(data)
    opts = LoopOptions(precision=precision, log_every_steps=50)  # type: ignore[arg-type]
    warm = ImageSet(data.images[:batch * 2], data.labels[:batch * 2], data.ids[:batch * 2], data.class_names)
    fit(task, ViewBatches(warm, 1, 0) if kind == "distill" else ImageBatches(warm), Schedule(1, batch, 1e-4),
        device=device, progress=False, options=opts)
    cpu = time.process_time()
    with Utilisation(device) as use:
        r = fit(task, source, Schedule(1, batch, 1e-4), device=device, progress=False, options=opts)
        sync(device)
    return r.images_seen / r.seconds, use.value, use.note, r.images_seen / (time.process_time() - cpu)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=None, help="input side in pixels (cuda: 224, cpu: 64)")
    p.add_argument("--images", type=int, default=None, help="images per measurement (cuda: 4096, cpu: 192)")
    p.add_argument("--batch-size", type=int, default=None, help="cuda: 256, cpu: 32")
    p.add_argument("--teachers", default="vit_b16,lite2")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the best of each is reported")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    size, n, batch = a.size or (224 if cuda else 64), a.images or (4096 if cuda else 192), a.batch_size or (256 if cuda else 32)
    set_threads(a.threads)
    configure_device(device)
    precisions = [q for q in a.precisions.split(",") if q != "bf16" or not cuda or bf16_supported(device)]
    data = transfer_set(n, size)
    rows: list[dict[str, Any]] = []
    for precision in precisions:
        for key in a.teachers.split(","):
            model = teacher_model(key, size, device)
            raws, caches, ends, raw_cpu, cache_cpu = [], [], [], [], []
            for _ in range(a.repeats):  # interleaved, best of each: robust to other load on a shared machine
                raw, raw_c = raw_forward(model, batch, max(2, n // batch), device, precision)
                cache, end_to_end, cache_c = cache_build(model, data, batch, device, precision)
                raws.append(raw)
                caches.append(cache)
                ends.append(end_to_end)
                raw_cpu.append(raw_c)
                cache_cpu.append(cache_c)
            rows.append({"measure": "teacher cache", "model": TEACHERS[key][0], "precision": precision,
                         "images_per_s": round(max(caches), 1), "reference_images_per_s": round(max(raws), 1),
                         "ratio": round(max(caches) / max(raws), 3), "target": 0.85,
                         "end_to_end_images_per_s": round(max(ends), 1),
                         "cpu_time_ratio": round(max(cache_cpu) / max(raw_cpu), 3),
                         "images_per_cpu_s": round(max(cache_cpu), 1), "reference_images_per_cpu_s": round(max(raw_cpu), 1),
                         "samples": {"cache": [round(x, 1) for x in caches], "raw": [round(x, 1) for x in raws]}})
            del model
        distills, plains, uses, d_cpu, p_cpu = [], [], [], [], []
        for _ in range(a.repeats):
            distill, use, note, dc = train_throughput("distill", data, size, batch, device, precision)
            plain, _, _, pc = train_throughput("supervised", data, size, batch, device, precision)
            distills.append(distill)
            plains.append(plain)
            uses.append(use)
            d_cpu.append(dc)
            p_cpu.append(pc)
        best = distills.index(max(distills))
        rows.append({"measure": "distill step", "model": STUDENT, "precision": precision,
                     "images_per_s": round(max(distills), 1), "reference_images_per_s": round(max(plains), 1),
                     "ratio": round(max(distills) / max(plains), 3), "target": 0.9,
                     "cpu_time_ratio": round(max(d_cpu) / max(p_cpu), 3),
                     "images_per_cpu_s": round(max(d_cpu), 1), "reference_images_per_cpu_s": round(max(p_cpu), 1),
                     "utilisation": None if uses[best] is None else round(uses[best], 3), "utilisation_note": note,
                     "samples": {"distill": [round(x, 1) for x in distills],
                                 "supervised": [round(x, 1) for x in plains]}})
    speedups = []
    if "fp32" in precisions and "bf16" in precisions:
        for r in rows:
            if r["precision"] == "bf16":
                ref = next(x for x in rows if x["precision"] == "fp32" and x["measure"] == r["measure"]
                           and x["model"] == r["model"])
                speedups.append({"measure": r["measure"], "model": r["model"],
                                 "bf16_over_fp32": round(r["images_per_s"] / ref["images_per_s"], 3)})
    machine = torch.cuda.get_device_name(device) if cuda else f"{platform.processor() or platform.machine()}, " \
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads"
    result = {"machine": machine, "torch": torch.__version__, "device": str(device), "input_size": size,
              "images": n, "batch_size": batch, "repeats": a.repeats, "rows": rows, "bf16_speedup": speedups}
    print(f"\n{machine}, {size} px, {n} images, batch {batch}, best of {a.repeats}\n")
    print("| measure | model | precision | images/s | reference images/s | ratio | target | end-to-end images/s "
          "| images/CPU-s | reference images/CPU-s | CPU-time ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['measure']} | {r['model']} | {r['precision']} | {r['images_per_s']} | "
              f"{r['reference_images_per_s']} | {r['ratio']} | >= {r['target']} | "
              f"{r.get('end_to_end_images_per_s', '')} | {r['images_per_cpu_s']} | "
              f"{r['reference_images_per_cpu_s']} | {r['cpu_time_ratio']} |")
    for s in speedups:
        print(f"bf16 / fp32, {s['measure']} {s['model']}: {s['bf16_over_fp32']}x")
    for r in rows:
        if "utilisation" in r:
            print(f"utilisation during distillation ({r['precision']}): {r['utilisation']} ({r['utilisation_note']})")
    text = json.dumps(result, indent=2)
    print(text)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
