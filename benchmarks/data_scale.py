"""Data preparation at real scale: 256-px JPEG folders prepared for a 224-px teacher through the image store.

Run: .venv/bin/python benchmarks/data_scale.py [all | make-data | prepare | workers | full-run]
     [--data data/scale] [--out benchmarks/results/data_scale] [--full-images 50000]

- make-data: folders of synthetic 256x256 JPEGs in 10 classes (shapes on noise): `train-2000`, `train-8000`,
  `train-<full+100>` (hard links into one pool of files) and `test` (1,000 images).
- prepare: for 2,000 and 8,000 training images, `taskdistill prepare` with the teacher at 224 px in a fresh
  process each, first with an empty store folder (the store is built), then again (the store is reused).
  Records peak RSS of the process (and of its largest decode worker) and the data-preparation seconds;
  the RSS slope per added transfer image and the second run's share of the first run's time.
- workers: building the 8,000-image store with `data.decode_workers` 1 and 2 (fresh store folder each).
- decoders: one process's images/s for our PIL decode vs simplejpeg (if installed) on the 256-px JPEGs, and
  JPEG draft mode on and off for 1024-px JPEGs decoded to 224 px.
- full-run: a whole `taskdistill run` (teacher tf_efficientnet_lite0 at 224 px, cached outputs over
  `--full-images` transfer images, student resnet10t at 32 px, short schedules: memory does not depend on
  the number of epochs) in a fresh process; peak RSS and wall time.
Each part writes `<out>/<part>.json`; `summary.md` collects what exists.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

CLASSES = ["circle", "square", "triangle", "cross", "hbars", "vbars", "ring", "diamond", "dots", "diagonal"]
REPO = Path(__file__).resolve().parents[1]

# Runs one CLI verb in this (fresh) process and prints its peak RSS (VmHWM: this process's own pages only,
# whereas ru_maxrss also counts the image of the parent it was forked from) as the last line.
RUNNER = """
import json, sys, time
from taskdistill.cli.main import main
from taskdistill.data.store_decode import peak_rss_kb
start = time.perf_counter()
rc = main(sys.argv[1:])
seconds = time.perf_counter() - start
print("RUSAGE " + json.dumps({"rc": rc, "seconds": round(seconds, 2), "maxrss_kb": peak_rss_kb()}))
"""


def draw_image(index: int, c: int, size: int = 256):  # noqa: ANN201 - a PIL image
    """A `size`-px RGB image of class `c`: a random-coloured shape of random size and place on coloured noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(index)
    img = Image.fromarray(rng.integers(0, 90, (256, 256, 3), dtype=np.uint8))
    d = ImageDraw.Draw(img)
    colour = tuple(int(v) for v in rng.integers(120, 256, 3))
    r = int(rng.integers(40, 100))
    cx, cy = (int(v) for v in rng.integers(r + 5, 256 - r - 5, 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    kind = CLASSES[c]
    if kind == "circle":
        d.ellipse(box, fill=colour)
    elif kind == "square":
        d.rectangle(box, fill=colour)
    elif kind == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif kind == "cross":
        d.rectangle((cx - r, cy - r // 5, cx + r, cy + r // 5), fill=colour)
        d.rectangle((cx - r // 5, cy - r, cx + r // 5, cy + r), fill=colour)
    elif kind in ("hbars", "vbars"):
        for k in range(-r, r, 16):
            d.rectangle((cx - r, cy + k, cx + r, cy + k + 7) if kind == "hbars" else (cx + k, cy - r, cx + k + 7, cy + r),
                        fill=colour)
    elif kind == "ring":
        d.ellipse(box, outline=colour, width=max(4, r // 5))
    elif kind == "diamond":
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif kind == "dots":
        for _ in range(8):
            x, y = (int(v) for v in rng.integers(-r, r, 2))
            d.ellipse((cx + x - 6, cy + y - 6, cx + x + 6, cy + y + 6), fill=colour)
    else:
        for k in range(-r, r, 18):
            d.line((cx - r, cy + k, cx + r, cy + k + r), fill=colour, width=6)
    return img if size == 256 else img.resize((size, size), Image.Resampling.BICUBIC)


def draw(args: tuple[int, int, Path]) -> None:
    """One 256x256 JPEG (quality 90) of class `c` at `path`."""
    index, c, path = args
    draw_image(index, c).save(path, quality=90)


def make_data(root: Path, full_images: int) -> None:
    pool, test = root / "pool", root / "test"
    sizes = [2000, 8000, full_images + 100]
    n_pool = max(sizes)
    todo = []
    for folder, n, offset in ((pool, n_pool, 0), (test, 1000, 10_000_000)):
        for c in CLASSES:
            (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = folder / CLASSES[i % 10] / f"{i:07d}.jpg"
            if not path.exists():
                todo.append((offset + i, i % 10, path))
    start = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as ex:
        list(ex.map(draw, todo, chunksize=256))
    print(f"make-data: wrote {len(todo):,} JPEGs in {time.perf_counter() - start:.0f} s")
    for n in sizes:  # train-N: the first N pool images, as hard links (same files, own paths)
        folder = root / f"train-{n}"
        if folder.exists():
            continue
        tmp = root / f".train-{n}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for i in range(n):
            c = CLASSES[i % 10]
            (tmp / c).mkdir(parents=True, exist_ok=True)
            os.link(pool / c / f"{i:07d}.jpg", tmp / c / f"{i:07d}.jpg")
        tmp.rename(folder)


def run_verb(argv: list[str], env: dict[str, str], log: Path) -> dict:
    """`taskdistill ARGV` in a fresh process; its RUSAGE line as a dict (stdout/stderr go to `log`)."""
    proc = subprocess.run([sys.executable, "-c", RUNNER, *argv], env=env, capture_output=True, text=True)
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RUSAGE ")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"`taskdistill {' '.join(argv)}` failed; see {log}")
    return json.loads(line[-1].removeprefix("RUSAGE "))


def base_sets(root: Path, train: Path) -> list[str]:
    return ["--set", "data.dataset=folder", "--set", f"data.root={train}", "--set", f"data.test_root={root / 'test'}",
            "--set", "teacher.model.input_size=224", "--set", "distill.transfer.max_images=null"]


def part_prepare(root: Path, out: Path) -> dict:
    rows = []
    for n in (2000, 8000):
        store = out / "stores" / f"prepare-{n}"
        shutil.rmtree(store, ignore_errors=True)
        env = {**os.environ, "TASKDISTILL_CACHE_DIR": str(store)}
        for attempt in ("first", "second"):
            r = run_verb(["prepare", *base_sets(root, root / f"train-{n}"), "--json"], env,
                         out / f"prepare-{n}-{attempt}.log")
            prepared = json.loads((out / f"prepare-{n}-{attempt}.log").read_text().split("\n--- stderr")[0]
                                  .split("RUSAGE")[0])
            metas = [json.loads(p.read_text()) for p in (store / "stores").glob("*/store.json")]
            rows.append({"train_images": n, "transfer_images": prepared["sets"]["transfer"], "run": attempt,
                         "prepare_seconds": prepared["seconds"], "process_seconds": r["seconds"],
                         "peak_rss_mb": round(r["maxrss_kb"] / 1024, 1),
                         "worker_peak_rss_mb": max(m["worker_peak_rss_mb"] for m in metas) if attempt == "first" else 0,
                         "store_bytes": sum(s["bytes"] for s in prepared["stores"])})
        shutil.rmtree(store, ignore_errors=True)
    first = {r["train_images"]: r for r in rows if r["run"] == "first"}
    second = {r["train_images"]: r for r in rows if r["run"] == "second"}
    added = first[8000]["transfer_images"] - first[2000]["transfer_images"]
    result = {
        "rows": rows,
        "rss_kb_per_added_transfer_image_first_run":
            round((first[8000]["peak_rss_mb"] - first[2000]["peak_rss_mb"]) * 1024 / added, 2),
        "rss_kb_per_added_transfer_image_second_run":
            round((second[8000]["peak_rss_mb"] - second[2000]["peak_rss_mb"]) * 1024 / added, 2),
        "second_run_share_of_first_prepare_time_8000":
            round(second[8000]["prepare_seconds"] / first[8000]["prepare_seconds"], 4),
    }
    return result


def part_workers(root: Path, out: Path) -> dict:
    rows = []
    for workers in (1, 2, 1, 2):  # interleaved, twice: this machine is noisy
        store = out / "stores" / f"workers-{workers}"
        shutil.rmtree(store, ignore_errors=True)
        env = {**os.environ, "TASKDISTILL_CACHE_DIR": str(store)}
        run_verb(["prepare", *base_sets(root, root / "train-8000"), "--set", f"data.decode_workers={workers}",
                  "--json"], env, out / f"workers-{workers}.log")
        meta = [json.loads(p.read_text()) for p in (store / "stores").glob("*/store.json")]
        train = next(m for m in meta if m["num_images"] == 8000)
        rows.append({"workers": workers, "images": 8000, "build_seconds": train["build_seconds"],
                     "decode_seconds": train["decode_seconds"],
                     "images_per_second": round(8000 / train["build_seconds"], 1)})
        shutil.rmtree(store, ignore_errors=True)
    best = {w: min(r["build_seconds"] for r in rows if r["workers"] == w) for w in (1, 2)}
    mean = {w: sum(r["build_seconds"] for r in rows if r["workers"] == w) / 2 for w in (1, 2)}
    return {"rows": rows, "speedup_2_vs_1_workers": round(best[1] / best[2], 3),
            "speedup_2_vs_1_workers_mean": round(mean[1] / mean[2], 3)}


def part_full_run(root: Path, out: Path, full_images: int) -> dict:
    store = out / "stores" / "full-run"
    shutil.rmtree(store, ignore_errors=True)
    env = {**os.environ, "TASKDISTILL_CACHE_DIR": str(store)}
    train = root / f"train-{full_images + 100}"
    argv = ["run", *base_sets(root, train), "--force",
            "--set", "name=full-run", "--set", f"output_dir={out / 'runs'}",
            "--set", "teacher.model.name=tf_efficientnet_lite0",
            "--set", "teacher.probe.epochs=1", "--set", "teacher.probe.min_steps=10",
            "--set", "teacher.train.epochs=1", "--set", "distill.train.epochs=1",
            "--set", "student.finetune.epochs=1", "--set", "student.finetune.min_steps=10",
            "--set", "student.scratch.epochs=1", "--set", "student.scratch.min_steps=10"]
    start = time.perf_counter()
    r = run_verb(argv, env, out / "full-run.log")
    metrics = json.loads((out / "runs" / "full-run" / "metrics.json").read_text())
    metas = [json.loads(p.read_text()) for p in (store / "stores").glob("*/store.json")]
    result = {"transfer_images": metrics["stages"]["student_distilled"]["transfer_images"],
              "teacher_input": 224, "wall_seconds": round(time.perf_counter() - start, 1),
              "peak_rss_mb": round(r["maxrss_kb"] / 1024, 1),
              "worker_peak_rss_mb": max(m["worker_peak_rss_mb"] for m in metas),
              "store_build_seconds": sum(m["build_seconds"] for m in metas),
              "top1": {k: v["test"]["top1"] for k, v in metrics["stages"].items() if "test" in v}}
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(out / "runs" / "full-run" / "checkpoints", ignore_errors=True)
    return result


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def part_decoders(root: Path, out: Path) -> dict:
    """Images/s of one process: our decode (PIL) against simplejpeg + the same resize, on the 256-px JPEGs;
    and JPEG draft mode on 1024-px JPEGs (the 256-px ones upscaled) decoded to 224 px. Interleaved, 3 rounds."""
    import io

    from PIL import Image

    from taskdistill.data.decode import DecodePolicy, decode_array

    files = sorted((root / "pool" / "circle").glob("*.jpg"))[:400]
    small = [f.read_bytes() for f in files]
    large = []
    for d in small[:150]:
        buf = io.BytesIO()
        Image.open(io.BytesIO(d)).resize((1024, 1024), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
        large.append(buf.getvalue())
    policy, no_draft = DecodePolicy(224), DecodePolicy(224, jpeg_draft=False)
    candidates = {"pil_256": (small, lambda d: decode_array(io.BytesIO(d), policy)),
                  "pil_1024_draft": (large, lambda d: decode_array(io.BytesIO(d), policy)),
                  "pil_1024_no_draft": (large, lambda d: decode_array(io.BytesIO(d), no_draft))}
    try:
        import simplejpeg

        def sj(d: bytes) -> np.ndarray:
            arr = simplejpeg.decode_jpeg(d, colorspace="RGB")
            return np.asarray(Image.fromarray(arr).resize((224, 224), Image.Resampling.BICUBIC))

        candidates["simplejpeg_256"] = (small, sj)
    except ImportError:
        pass
    rates: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(3):
        for name, (datas, fn) in candidates.items():
            t = time.perf_counter()
            for d in datas:
                fn(d)
            rates[name].append(len(datas) / (time.perf_counter() - t))
    best = {k: round(max(v), 1) for k, v in rates.items()}
    result: dict = {"images_per_second": best,
                    "draft_speedup_1024_to_224": round(best["pil_1024_draft"] / best["pil_1024_no_draft"], 2)}
    if "simplejpeg_256" in best:
        result["simplejpeg_vs_pil_256"] = round(best["simplejpeg_256"] / best["pil_256"], 2)
    return result


def summary(out: Path) -> str:
    lines = [f"# Data preparation at scale ({cpu_name()}, {os.cpu_count()} cores)", ""]
    p = out / "prepare.json"
    if p.is_file():
        d = json.loads(p.read_text())
        lines += ["| train images | transfer images | run | prepare s | peak RSS MB | worker peak RSS MB | store MB |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['train_images']:,} | {r['transfer_images']:,} | {r['run']} | {r['prepare_seconds']} | "
                  f"{r['peak_rss_mb']} | {r['worker_peak_rss_mb']} | {r['store_bytes'] / 2**20:.0f} |" for r in d["rows"]]
        lines += ["", f"RSS slope per added transfer image: {d['rss_kb_per_added_transfer_image_first_run']} KB "
                      f"(first run, store built), {d['rss_kb_per_added_transfer_image_second_run']} KB (second run).",
                  f"Second run's data preparation: {100 * d['second_run_share_of_first_prepare_time_8000']:.2f} % "
                  f"of the first run's (8,000 images).", ""]
    p = out / "workers.json"
    if p.is_file():
        d = json.loads(p.read_text())
        lines += ["| decode workers | images | build s | decode s | images/s |", "|---|---|---|---|---|"]
        lines += [f"| {r['workers']} | {r['images']:,} | {r['build_seconds']} | {r['decode_seconds']} | "
                  f"{r['images_per_second']} |" for r in d["rows"]]
        lines += ["", f"2 workers vs 1: {d['speedup_2_vs_1_workers']}x (best of each), "
                      f"{d['speedup_2_vs_1_workers_mean']}x (mean of each)", ""]
    p = out / "decoders.json"
    if p.is_file():
        d = json.loads(p.read_text())
        rates = ", ".join(f"{k} {v:,.0f}" for k, v in d["images_per_second"].items())
        lines += [f"Decoders, images/s in one process: {rates}. JPEG draft (1024 -> 224 px): "
                  f"{d['draft_speedup_1024_to_224']}x; simplejpeg vs PIL at 256 px: "
                  f"{d.get('simplejpeg_vs_pil_256', 'not installed')}x.", ""]
    p = out / "full-run.json"
    if p.is_file():
        d = json.loads(p.read_text())
        lines += [f"Full `taskdistill run`, {d['transfer_images']:,} transfer images, teacher at 224 px: peak RSS "
                  f"{d['peak_rss_mb']:,} MB (largest decode worker {d['worker_peak_rss_mb']} MB), "
                  f"{d['wall_seconds'] / 60:.1f} min.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", nargs="?", default="all", choices=["all", "make-data", "prepare", "workers", "decoders", "full-run"])
    ap.add_argument("--data", default="data/scale")
    ap.add_argument("--out", default="benchmarks/results/data_scale")
    ap.add_argument("--full-images", type=int, default=50_000)
    args = ap.parse_args()
    root, out = Path(args.data).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    parts = ["make-data", "prepare", "workers", "decoders", "full-run"] if args.part == "all" else [args.part]
    for part in parts:
        if part == "make-data":
            make_data(root, args.full_images)
            continue
        result = {"prepare": lambda: part_prepare(root, out), "workers": lambda: part_workers(root, out),
                  "decoders": lambda: part_decoders(root, out),
                  "full-run": lambda: part_full_run(root, out, args.full_images)}[part]()
        result["machine"] = {"cpu": cpu_name(), "cores": os.cpu_count(),
                             "python": platform.python_version()}
        (out / f"{part}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    (out / "summary.md").write_text(summary(out))
    print(summary(out))


if __name__ == "__main__":
    main()
