"""`taskdistill benchmark CHECKPOINT [--teacher CKPT]`: what the student buys, measured on this machine.

Parameters, forward GFLOPs, batch-1 latency (p50 / p95) and batch-N throughput, in PyTorch and (with
onnxruntime installed) in onnxruntime, for the student and its run's teacher (`<run>/checkpoints/teacher`
by default), on zero inputs at each model's own input size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="latency and throughput of a checkpoint and its teacher on this machine")
    p.add_argument("checkpoint", help="checkpoint path (.safetensors or its stem)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint (default: the run folder's, if any)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size of the throughput measurement")
    p.add_argument("--seconds", type=float, default=3.0, help="time spent on each measurement")
    p.add_argument("--no-onnx", action="store_true", help="PyTorch only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=benchmark)


def measure(path: str, batch_size: int, seconds: float, onnx: bool) -> dict[str, Any]:
    import torch

    from taskdistill.engine.checkpoint import load_checkpoint
    from taskdistill.engine.compute import count_parameters, forward_gflops
    from taskdistill.engine.latency import measure_latency, model_latency

    model, meta = load_checkpoint(path)
    row: dict[str, Any] = {"checkpoint": str(path), "stage": meta.get("stage"), "model": meta["model"]["name"],
                           "input_size": model.preprocess.input_size, "params": count_parameters(model),
                           "gflops": round(forward_gflops(model), 4),
                           "pytorch": model_latency(model, seconds=seconds, batch_size=batch_size).to_dict()}
    if onnx:
        from taskdistill.export.onnx_file import OnnxModel, export_onnx

        size = model.preprocess.input_size
        with tempfile.TemporaryDirectory() as tmp:
            file = export_onnx(model, Path(tmp) / "model.onnx", torch.zeros(2, 3, size, size), uint8_input=False)
            session = OnnxModel(file, threads=torch.get_num_threads())
            one = torch.zeros(1, 3, size, size).numpy()
            many = torch.zeros(batch_size, 3, size, size).numpy()
            row["onnxruntime"] = measure_latency(session.run, one, many, batch_size, seconds=seconds).to_dict()
    return row


def benchmark(args: argparse.Namespace) -> int:
    from taskdistill.engine.device import set_threads
    from taskdistill.report.markdown import markdown_table

    set_threads(None)
    teacher = args.teacher
    if teacher is None:
        sibling = Path(args.checkpoint).with_suffix("").parent / "teacher.json"
        teacher = str(sibling.with_suffix("")) if sibling.is_file() and sibling.stem != Path(args.checkpoint).stem else None
    onnx = not args.no_onnx
    if onnx:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            onnx = False
    rows = [measure(p, args.batch_size, args.seconds, onnx) for p in ([teacher] if teacher else []) + [args.checkpoint]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ["model", "stage", "input", "params (M)", "GFLOPs", "PyTorch b1 p50 / p95 ms", f"PyTorch b{args.batch_size} img/s"]
    if onnx:
        headers += ["ORT b1 p50 / p95 ms", f"ORT b{args.batch_size} img/s"]
    table = []
    for r in rows:
        cells = [r["model"], r["stage"], r["input_size"], f"{r['params'] / 1e6:.2f}", f"{r['gflops']:.3f}",
                 f"{r['pytorch']['p50_ms']:.2f} / {r['pytorch']['p95_ms']:.2f}", f"{r['pytorch']['throughput']:,.0f}"]
        if onnx:
            o = r["onnxruntime"]
            cells += [f"{o['p50_ms']:.2f} / {o['p95_ms']:.2f}", f"{o['throughput']:,.0f}"]
        table.append(cells)
    print(markdown_table(headers, table))
    if len(rows) == 2:
        t, s = rows
        print(f"\nstudent vs teacher: {t['gflops'] / max(s['gflops'], 1e-12):.1f}x fewer FLOPs, "
              f"{t['pytorch']['p50_ms'] / max(s['pytorch']['p50_ms'], 1e-9):.1f}x lower PyTorch batch-1 latency, "
              f"{t['params'] / max(s['params'], 1):.2f}x fewer parameters")
    return 0
