"""Deployment figures: evaluate = the run's report, export parity and int8, teacher vs student latency.

Run: .venv/bin/python benchmarks/deploy.py [all | consistency | export | latency]
     [--run runs/default] [--out benchmarks/results/deploy]

- consistency: a folder dataset of 96-px images (Fashion-MNIST, upscaled, 6,000 train / 1,000 test PNGs under
  data/deploy/fm96), a full `taskdistill run` with the teacher at 64 px and the student at 32 px, then
  `taskdistill evaluate CHECKPOINT` (no config: the checkpoint's own) for every checkpoint, against metrics.json.
- export: the default run's student (`--run`, made with `make run` / `taskdistill run`) exported to ONNX with
  an int8 copy (checked on 1,000 test images, calibrated on 256 transfer images), to a timm folder, and to
  ONNX with the uint8 input pipeline; each export's record (`export.json`).
- latency: `taskdistill benchmark` of that student and its teacher (PyTorch and onnxruntime).
Each part writes `<out>/<part>.json`; `summary.md` collects what exists. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

FM = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "taskdistill.cli.main", *args], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise SystemExit(f"`taskdistill {' '.join(args)}` failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def make_fm96(root: Path, train: int = 6000, test: int = 1000) -> None:
    """Fashion-MNIST images upscaled to 96x96 RGB PNGs in class folders (first `train` / `test` of each split)."""
    from PIL import Image

    if (root / "done").is_file():
        return
    for split, prefix, n in (("train", "train", train), ("test", "t10k", test)):
        raw = gzip.open(FM / f"{prefix}-images-idx3-ubyte.gz").read()
        images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
        labels = np.frombuffer(gzip.open(FM / f"{prefix}-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
        for i in range(n):
            folder = root / split / CLASSES[labels[i]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).convert("RGB").resize((96, 96), Image.Resampling.BICUBIC).save(
                folder / f"{i:05d}.png")
    (root / "done").write_text("ok\n")


def part_consistency(out: Path) -> dict:
    data = Path("data/deploy/fm96").resolve()
    make_fm96(data)
    env = {**os.environ, "TASKDISTILL_CACHE_DIR": str(out / "cache")}
    cli("run", "--force", "--set", "data.dataset=folder", "--set", f"data.root={data / 'train'}",
        "--set", f"data.test_root={data / 'test'}", "--set", "name=fm96", "--set", f"output_dir={out / 'runs'}",
        env=env)
    run = out / "runs" / "fm96"
    metrics = json.loads((run / "metrics.json").read_text())["stages"]
    rows = []
    for stage, info in metrics.items():
        got = json.loads(cli("evaluate", str(run / "checkpoints" / stage), "--json", env=env))
        rows.append({"stage": stage, "report_top1": info["test"]["top1"], "evaluate_top1": got["top1"],
                     "difference_points": round(100 * (got["top1"] - info["test"]["top1"]), 4)})
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    shutil.rmtree(out / "cache", ignore_errors=True)
    return {"rows": rows, "max_difference_points": max(abs(r["difference_points"]) for r in rows)}


def part_export(run: Path, out: Path) -> dict:
    student = run / "checkpoints" / "student"
    result = {}
    for name, args in (("onnx", ["--quantize", "int8"]), ("hf", ["--format", "hf"]),
                       ("onnx_uint8", ["--with-preprocessing"])):
        folder = out / "exports" / name
        shutil.rmtree(folder, ignore_errors=True)
        cli("export", str(student), "--out", str(folder), *args)
        result[name] = json.loads((folder / "export.json").read_text())
        result[name].pop("class_names", None)
    shutil.rmtree(out / "exports", ignore_errors=True)
    return result


def part_latency(run: Path) -> dict:
    return {"rows": json.loads(cli("benchmark", str(run / "checkpoints" / "student"), "--json"))}


def summary(out: Path) -> str:
    lines = ["# Deployment figures", ""]
    p = out / "consistency.json"
    if p.is_file():
        d = json.loads(p.read_text())
        lines += ["| checkpoint | run report top-1 % | `evaluate` top-1 % | difference (points) |", "|---|---|---|---|"]
        lines += [f"| {r['stage']} | {100 * r['report_top1']:.2f} | {100 * r['evaluate_top1']:.2f} | "
                  f"{r['difference_points']:+.2f} |" for r in d["rows"]]
        lines += [""]
    p = out / "export.json"
    if p.is_file():
        d = json.loads(p.read_text())
        for name, rec in d.items():
            par = rec["parity"]
            lines.append(f"- {name}: {par['images']} test images, max |logit difference| {par['max_abs_diff']:.2e}, "
                         f"top-1 agreement {100 * par['top1_agreement']:.2f} %")
            if "int8" in rec:
                q = rec["int8"]
                lines.append(f"- int8 ({q['calibration_images']} calibration images): top-1 "
                             f"{100 * q['fp32_top1']:.2f} -> {100 * q['int8_top1']:.2f} %, batch-1 p50 "
                             f"{q['fp32_onnx_latency']['p50_ms']:.3f} -> {q['int8_onnx_latency']['p50_ms']:.3f} ms, "
                             f"batch-64 {q['fp32_onnx_latency']['throughput']:,.0f} -> "
                             f"{q['int8_onnx_latency']['throughput']:,.0f} img/s")
        lines += [""]
    p = out / "latency.json"
    if p.is_file():
        d = json.loads(p.read_text())
        lines += ["| model | stage | input | params (M) | GFLOPs | PyTorch b1 p50 / p95 ms | PyTorch b64 img/s | "
                  "ORT b1 p50 / p95 ms | ORT b64 img/s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in d["rows"]:
            t, o = r["pytorch"], r["onnxruntime"]
            lines.append(f"| {r['model']} | {r['stage']} | {r['input_size']} | {r['params'] / 1e6:.2f} | "
                         f"{r['gflops']:.3f} | {t['p50_ms']:.2f} / {t['p95_ms']:.2f} | {t['throughput']:,.0f} | "
                         f"{o['p50_ms']:.2f} / {o['p95_ms']:.2f} | {o['throughput']:,.0f} |")
        lines += [""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", nargs="?", default="all", choices=["all", "consistency", "export", "latency"])
    ap.add_argument("--run", default="runs/default", help="a finished run folder (the default run)")
    ap.add_argument("--out", default="benchmarks/results/deploy")
    args = ap.parse_args()
    out, run = Path(args.out).resolve(), Path(args.run).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for part in (["consistency", "export", "latency"] if args.part == "all" else [args.part]):
        result = {"consistency": lambda: part_consistency(out), "export": lambda: part_export(run, out),
                  "latency": lambda: part_latency(run)}[part]()
        (out / f"{part}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "summary.md").write_text(summary(out))
    print(summary(out))


if __name__ == "__main__":
    main()
